"""Request limits and the turn record endpoint, against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import orjson
import pytest

from tests.support import ScriptedUpstream, TetherServer

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    srv = TetherServer(
        tmp_path_factory.mktemp("limits") / "tether.db",
        scripted.base_url,
        TETHER_MAX_MESSAGES="3",
        TETHER_MAX_CONTENT_CHARS="100",
    ).start()
    yield srv
    srv.stop()


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_too_many_messages_is_413(limited: TetherServer, upstream: ScriptedUpstream) -> None:
    before = limited.counts()
    r = httpx2.post(limited.url + CHAT, json={"messages": [user("a")] * 4})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_many_messages"
    assert limited.counts() == before and upstream.chat_bodies() == []
    assert httpx2.post(limited.url + CHAT, json={"messages": [user("a")] * 3}).status_code == 200


def test_content_too_large_is_413(limited: TetherServer, upstream: ScriptedUpstream) -> None:
    before = limited.counts()
    for content in ("x" * 101, [{"type": "text", "text": "y" * 101}]):
        r = httpx2.post(
            limited.url + CHAT, json={"messages": [{"role": "user", "content": content}]}
        )
        assert r.status_code == 413
        err = r.json()["error"]
        assert err["code"] == "content_too_large" and err["param"] == "messages[0].content"
    assert limited.counts() == before and upstream.chat_bodies() == []


def test_deeply_nested_json_is_a_clean_400(limited: TetherServer) -> None:
    before = limited.counts()
    deep = b'{"messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 5000 + b"]" * 5000
    r = httpx2.post(
        limited.url + CHAT, content=deep + b"}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    assert "Traceback" not in r.text
    assert limited.counts() == before


def test_turn_records_are_readable(limited: TetherServer, upstream: ScriptedUpstream) -> None:
    headers = {"X-Hermes-Session-Id": "turns-1"}
    ok = httpx2.post(limited.url + CHAT, json={"messages": [user("hi")]}, headers=headers)
    turn_id = ok.headers["x-tether-turn"]
    r = httpx2.get(f"{limited.url}/v1/conversations/turns-1/turns/{turn_id}")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "completed" and body["conversation_id"] == "turns-1"
    assert body["usage"]["completion_tokens"] > 0 and body["finished_at"] >= body["started_at"]
    upstream.queue({"status": 500})
    failed = httpx2.post(limited.url + CHAT, json={"messages": [user("boom")]}, headers=headers)
    assert failed.status_code == 502
    with limited.db() as db:
        (failed_id,) = db.execute("SELECT id FROM turns WHERE status = 'failed'").fetchone()
    r = httpx2.get(f"{limited.url}/v1/conversations/turns-1/turns/{failed_id}")
    assert r.json()["status"] == "failed" and r.json()["error"]["code"] == "upstream_error"
    missing = httpx2.get(f"{limited.url}/v1/conversations/turns-1/turns/turn_nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "turn_not_found"


def test_a_full_history_client_goes_on_past_the_message_limit(
    limited: TetherServer, upstream: ScriptedUpstream
) -> None:
    """The limit counts what a request adds: a full-history client resends what is stored."""
    history: list[dict[str, str]] = []
    for n in range(4):
        history.append(user(f"turn {n}"))
        r = httpx2.post(
            limited.url + CHAT,
            headers={"X-Hermes-Session-Id": "long-full"},
            json={"model": "scripted", "messages": history},
        )
        assert r.status_code == 200, r.text
        history.append(r.json()["choices"][0]["message"])
    assert len(history) == 8 and len(limited.transcript("long-full")) == 8
    # it may also trim its history (drop the oldest messages) without forking
    trimmed = [*history[4:], user("after trimming")]
    r = httpx2.post(
        limited.url + CHAT,
        headers={"X-Hermes-Session-Id": "long-full"},
        json={"model": "scripted", "messages": trimmed},
    )
    assert r.status_code == 200, r.text
    assert r.json()["tether"]["conversation_id"] == "long-full"
    assert len(limited.transcript("long-full")) == 10
    # adding more than the limit at once is still refused
    r = httpx2.post(
        limited.url + CHAT,
        headers={"X-Hermes-Session-Id": "long-full"},
        json={"model": "scripted", "messages": [*trimmed, *[user("x")] * 4]},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_messages"


def test_nesting_is_checked_on_what_a_full_history_request_adds(
    limited: TetherServer, upstream: ScriptedUpstream
) -> None:
    """A full-history request's messages are checked as they are parsed: a too-deep new
    message is the same 400 (naming it), and with an Idempotency-Key (whose hash serialises
    the whole body) a body orjson cannot write is a 400 too, never a 500."""
    headers = {"X-Hermes-Session-Id": "deep-full"}
    first = httpx2.post(limited.url + CHAT, json={"messages": [user("a")]}, headers=headers)
    history = [user("a"), first.json()["choices"][0]["message"]]
    deep: object = "x"
    for _ in range(70):
        deep = [deep]
    before = limited.counts()
    body = {"messages": [*history, {**user("b"), "x": deep}]}
    r = httpx2.post(limited.url + CHAT, json=body, headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "messages" and "messages[2].x" in error["message"]
    assert "64 levels" in error["message"]
    raw = (
        b'{"messages": ['
        + b",".join(orjson.dumps(m) for m in history)
        + b',{"role": "user", "content": "c", "x": '
        + b"[" * 300
        + b"]" * 300
        + b"}]}"
    )
    r = httpx2.post(
        limited.url + CHAT,
        content=raw,
        headers={**headers, "Content-Type": "application/json", "Idempotency-Key": "deep-k"},
    )
    assert r.status_code == 400, r.text
    assert limited.counts() == before
