"""Idempotency-Key end to end: retries replay the first result, never a second turn."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer

CHAT = "/v1/chat/completions"
STRESS = bool(int(os.environ.get("TETHER_STRESS_ROUNDS", "0")))  # make stress: the large N


def post(server: TetherServer, body: dict[str, Any], **headers: str) -> httpx2.Response:
    return httpx2.post(server.url + CHAT, json=body, headers=headers, timeout=30)


def turns(server: TetherServer, cid: str) -> int:
    with server.db() as db:
        row = db.execute(
            "SELECT count(*) FROM turns t JOIN conversations c ON c.pk = t.conversation_pk "
            "WHERE c.id = ?",
            (cid,),
        ).fetchone()
    return int(row[0])


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "scripted", "messages": [{"role": "user", "content": text}], **extra}


def test_same_key_same_body_replays_without_a_new_turn(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    headers = {"X-Hermes-Session-Id": "idem-1", "Idempotency-Key": "msg-0001"}
    first = post(server, body("hello"), **headers)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    for _ in range(100 if STRESS else 20):  # A1: every replay byte-equal, no new work
        second = post(server, body("hello"), **headers)
        assert second.status_code == 200
        assert second.headers["idempotent-replayed"] == "true"
        assert second.content == first.content
        assert second.headers["x-hermes-session-id"] == "idem-1"
        assert second.headers["x-tether-turn"] == first.headers["x-tether-turn"]
        assert second.headers["etag"] == first.headers["etag"]
    assert len(upstream.chat_bodies()) == 1
    assert turns(server, "idem-1") == 1
    assert len(server.transcript("idem-1")) == 2
    # another key is another turn
    third = post(server, body("hello"), **{**headers, "Idempotency-Key": "msg-0002"})
    assert third.status_code == 200 and "idempotent-replayed" not in third.headers
    assert turns(server, "idem-1") == 2


def test_a_stream_is_replayed_as_the_same_events(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    headers = {"X-Hermes-Session-Id": "idem-stream-1", "Idempotency-Key": "s-1"}
    req = body("stream me", stream=True, stream_options={"include_usage": True})
    first = post(server, req, **headers)
    second = post(server, req, **headers)
    assert second.headers["idempotent-replayed"] == "true"
    events = [line for line in first.text.splitlines() if line]
    assert events[-1] == "data: [DONE]"
    assert [line for line in second.text.splitlines() if line] == events
    assert len(upstream.chat_bodies()) == 1 and turns(server, "idem-stream-1") == 1


def test_same_key_while_running_is_409_then_replays(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"delay": 1.0})
    headers = {"X-Hermes-Session-Id": "idem-run-1", "Idempotency-Key": "busy-1"}
    results: list[httpx2.Response] = []
    worker = threading.Thread(target=lambda: results.append(post(server, body("slow"), **headers)))
    worker.start()
    time.sleep(0.3)
    busy = post(server, body("slow"), **headers)
    worker.join()
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert busy.headers["retry-after"] == "1"
    replay = post(server, body("slow"), **headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == results[0].json()
    assert len(upstream.chat_bodies()) == 1 and turns(server, "idem-run-1") == 1


def test_same_key_different_body_is_422(server: TetherServer, upstream: ScriptedUpstream) -> None:
    headers = {"X-Hermes-Session-Id": "idem-reuse-1", "Idempotency-Key": "k-1"}
    assert post(server, body("one"), **headers).status_code == 200
    other = post(server, body("two"), **headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    # the same body for another conversation is a different request too
    elsewhere = post(server, body("one"), **{**headers, "X-Hermes-Session-Id": "idem-reuse-2"})
    assert elsewhere.status_code == 422
    assert len(server.transcript("idem-reuse-1")) == 2 and server.transcript("idem-reuse-2") == []


def test_sdk_does_not_retry_a_reused_key(server: TetherServer, upstream: ScriptedUpstream) -> None:
    """A3 through the openai SDK: the 422 is final — exactly one attempt, nothing executed."""
    sent: list[str] = []
    http = httpx2.Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key="none", max_retries=3, http_client=http
    )
    headers = {"X-Hermes-Session-Id": "idem-sdk-422", "Idempotency-Key": "sdk-422"}
    client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "a"}], extra_headers=headers
    )
    sent.clear()
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "b"}], extra_headers=headers
        )
    assert caught.value.code == "idempotency_key_reused"
    assert sent == ["/v1/chat/completions"]  # one attempt
    assert len(upstream.chat_bodies()) == 1
    assert len(server.transcript("idem-sdk-422")) == 2
    http.close()


@pytest.mark.parametrize("key", ["", "x" * 256, "bad\tkey"], ids=["empty", "too_long", "ctrl"])
def test_malformed_key_is_400(server: TetherServer, key: str) -> None:
    before = server.counts()
    r = httpx2.post(
        server.url + CHAT,
        content=b'{"messages": [{"role": "user", "content": "x"}]}',
        headers=[(b"content-type", b"application/json"), (b"idempotency-key", key.encode())],
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_idempotency_key"
    assert server.counts() == before


def test_a_failed_turn_frees_its_key(server: TetherServer, upstream: ScriptedUpstream) -> None:
    headers = {"X-Hermes-Session-Id": "idem-fail-1", "Idempotency-Key": "f-1"}
    upstream.queue({"status": 500})
    assert post(server, body("try"), **headers).status_code == 502
    retry = post(server, body("try"), **headers)
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
    assert len(server.transcript("idem-fail-1")) == 2


def test_sdk_with_short_timeout_and_key_runs_one_turn(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """A4: the SDK times out at 0.3 s on a 1 s turn and retries with the same key."""
    upstream.queue({"delay": 1.0})
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", timeout=0.3, max_retries=6)
    reply = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "once"}],
        extra_headers={"X-Hermes-Session-Id": "idem-sdk-1", "Idempotency-Key": "sdk-1"},
    )
    assert reply.choices[0].message.content == "echo: once"
    assert len(upstream.chat_bodies()) == 1  # 0 duplicate upstream calls
    assert turns(server, "idem-sdk-1") == 1  # 0 duplicate turns
    assert len(server.transcript("idem-sdk-1")) == 2


def test_keys_are_scoped_per_tenant(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    """A6: tenant B reusing tenant A's key gets its own turn, never A's response."""
    srv = TetherServer(tmp_path / "keys.db", upstream.base_url)
    key_a, key_b = srv.create_key("a"), srv.create_key("b")
    srv.start()
    try:
        same = {"X-Hermes-Session-Id": "shared-name", "Idempotency-Key": "same-key"}
        a = post(srv, body("from A"), **same, Authorization=f"Bearer {key_a}")
        b = post(srv, body("from B"), **same, Authorization=f"Bearer {key_b}")
        assert a.status_code == b.status_code == 200
        assert "idempotent-replayed" not in b.headers
        assert b.json()["choices"][0]["message"]["content"] == "echo: from B"
        assert len(upstream.chat_bodies()) == 2
    finally:
        srv.stop()


def test_an_expired_key_runs_anew_and_is_reaped(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    """A7: after the retention the same key executes again; the reaper empties the table."""
    srv = TetherServer(
        tmp_path / "ttl.db", upstream.base_url, TETHER_IDEMPOTENCY_RETENTION="2"
    ).start()
    try:
        headers = {"X-Hermes-Session-Id": "ttl-1", "Idempotency-Key": "ttl-key"}
        assert post(srv, body("again"), **headers).status_code == 200
        assert srv.counts()["idempotency_keys"] == 1
        time.sleep(2.5)
        second = post(srv, body("again"), **headers)
        assert second.status_code == 200 and "idempotent-replayed" not in second.headers
        assert turns(srv, "ttl-1") == 2
        deadline = time.monotonic() + 10
        while srv.counts()["idempotency_keys"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert srv.counts()["idempotency_keys"] == 0
    finally:
        srv.stop()


def test_a_turn_outlives_a_client_that_disconnects_mid_stream(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """D1: the client goes away after the first events; the turn completes and is stored."""
    upstream.queue({"content": "one two three four five six seven eight", "chunk_delay": 0.1})
    with httpx2.stream(
        "POST",
        server.url + CHAT,
        json=body("tell me", stream=True),
        headers={"X-Hermes-Session-Id": "gone-1"},
    ) as r:
        turn_id = r.headers["x-tether-turn"]
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # hang up after the first event
    deadline = time.monotonic() + 10
    while len(server.transcript("gone-1")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [c for _, _, c in server.transcript("gone-1")] == [
        '"tell me"',
        '"one two three four five six seven eight"',
    ]
    record = httpx2.get(f"{server.url}/v1/conversations/gone-1/turns/{turn_id}").json()
    assert record["status"] == "completed"
