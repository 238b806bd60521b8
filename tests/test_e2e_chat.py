"""End to end: `tether serve` as a process, the scripted upstream as a process, the openai SDK."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer


def client(server: TetherServer, key: str = "none", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, default_headers=headers, max_retries=0
    )


def roles_contents(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m["content"]) for m in messages]


def test_bridge_sends_only_new_message_upstream_gets_whole_history(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    sdk = client(server, **{"X-Hermes-Session-Id": "bridge-chat-1"})
    for text in ("one", "two", "three"):
        raw = sdk.chat.completions.with_raw_response.create(
            model="scripted", messages=[{"role": "user", "content": text}]
        )
        assert raw.headers["x-hermes-session-id"] == "bridge-chat-1"
        assert raw.headers["x-tether-conversation"] == "bridge-chat-1"
        completion = raw.parse()
        assert completion.choices[0].message.content == f"echo: {text}"
        tether = (completion.model_extra or {})["tether"]
        assert tether["conversation_id"] == "bridge-chat-1"
        assert tether["epoch"] == 0 and tether["compacted"] is False
        assert tether["turn_id"] == raw.headers["x-tether-turn"]
    sent = [roles_contents(b["messages"]) for b in upstream.chat_bodies()]
    assert sent == [
        [("user", "one")],
        [("user", "one"), ("assistant", "echo: one"), ("user", "two")],
        [
            ("user", "one"),
            ("assistant", "echo: one"),
            ("user", "two"),
            ("assistant", "echo: two"),
            ("user", "three"),
        ],
    ]
    assert [(r, c) for _, r, c in server.transcript("bridge-chat-1")] == [
        ("user", '"one"'),
        ("assistant", '"echo: one"'),
        ("user", '"two"'),
        ("assistant", '"echo: two"'),
        ("user", '"three"'),
        ("assistant", '"echo: three"'),
    ]


def test_streaming_unguarded_delta_pattern_and_tether_on_final_chunk(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    sdk = client(server, **{"X-Hermes-Session-Id": "bridge-stream-1"})
    for n, text in enumerate(("alpha", "beta", "gamma"), start=1):
        stream = sdk.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces: list[str] = []
        final: dict[str, Any] | None = None
        usage = None
        for chunk in stream:
            if chunk.usage and not chunk.choices:  # the usage chunk aside
                usage = chunk.usage
                continue
            delta = chunk.choices[0].delta  # the common unguarded pattern
            pieces.append(delta.content or "")
            if chunk.choices[0].finish_reason:
                final = (chunk.model_extra or {}).get("tether")
        assert "".join(pieces) == f"echo: {text}"
        assert usage is not None and usage.completion_tokens > 0
        assert final is not None
        assert final["conversation_id"] == "bridge-stream-1"
        assert final["epoch"] == 0 and final["compacted"] is False
        assert len(upstream.chat_bodies()[-1]["messages"]) == 2 * n - 1
    assert len(server.transcript("bridge-stream-1")) == 6


def test_new_conversation_gets_server_minted_id(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    raw = client(server).chat.completions.with_raw_response.create(
        model="scripted", messages=[{"role": "user", "content": "hello"}]
    )
    cid = raw.headers["x-tether-conversation"]
    assert cid.startswith("conv_") and len(cid) == 5 + 32
    assert raw.headers["x-hermes-session-id"] == cid
    assert len(server.transcript(cid)) == 2


def test_full_history_client_appends_only_the_new_suffix(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    sdk = client(server, **{"X-Tether-Conversation": "ui-full-1"})
    history: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}]
    for text in ("q1", "q2", "q3", "q4"):
        history.append({"role": "user", "content": text})
        reply = sdk.chat.completions.create(model="scripted", messages=history)  # type: ignore[arg-type]
        history.append({"role": "assistant", "content": reply.choices[0].message.content})
    rows = server.transcript("ui-full-1")
    assert [r for _, r, _ in rows] == ["system"] + ["user", "assistant"] * 4
    # the upstream saw each message once, in order, with the system prompt first
    last = upstream.chat_bodies()[-1]["messages"]
    assert roles_contents(last) == [(m["role"], m["content"]) for m in history[:-1]]


def test_bridge_resending_system_prompt_appends_one_turn_each(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    sdk = client(server, **{"X-Hermes-Session-Id": "bridge-sys-1"})
    for text in ("a", "b", "c"):
        sdk.chat.completions.create(
            model="scripted",
            messages=[
                {"role": "system", "content": "You are the bridge bot."},
                {"role": "user", "content": text},
            ],
        )
    rows = server.transcript("bridge-sys-1")
    # the system prompt is recorded once (it did not change), then one user+assistant per turn
    assert [r for _, r, _ in rows] == ["system", "user", "assistant"] * 1 + [
        "user",
        "assistant",
    ] * 2
    sent = upstream.chat_bodies()[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "You are the bridge bot."}
    assert [m["role"] for m in sent].count("system") == 1
    # a changed system prompt is recorded and used from this turn on
    sdk.chat.completions.create(
        model="scripted",
        messages=[{"role": "system", "content": "New rules."}, {"role": "user", "content": "d"}],
    )
    assert server.transcript("bridge-sys-1")[-3][1:] == ("system", '"New rules."')
    assert upstream.chat_bodies()[-1]["messages"][0]["content"] == "New rules."


def test_editing_an_earlier_message_forks_and_leaves_the_original_intact(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    sdk = client(server, **{"X-Tether-Conversation": "ui-fork-1"})
    history: list[dict[str, Any]] = []
    for text in ("first", "second"):
        history.append({"role": "user", "content": text})
        reply = sdk.chat.completions.create(model="scripted", messages=history)  # type: ignore[arg-type]
        history.append({"role": "assistant", "content": reply.choices[0].message.content})
    before = server.transcript("ui-fork-1")
    edited = [*history[:2], {"role": "user", "content": "second, edited"}]
    raw = sdk.chat.completions.with_raw_response.create(model="scripted", messages=edited)  # type: ignore[arg-type]
    fork_id = raw.headers["x-tether-conversation"]
    assert fork_id != "ui-fork-1" and fork_id.startswith("conv_")
    tether = (raw.parse().model_extra or {})["tether"]
    assert tether["forked_from"] == {"conversation_id": "ui-fork-1", "seq": 2}
    assert server.transcript("ui-fork-1") == before
    fork = [(r, c) for _, r, c in server.transcript(fork_id)]
    assert fork == [
        ("user", '"first"'),
        ("assistant", '"echo: first"'),
        ("user", '"second, edited"'),
        ("assistant", '"echo: second, edited"'),
    ]
    info = httpx2.get(f"{server.url}/v1/conversations/{fork_id}").json()
    assert info["forked_from"] == {"conversation_id": "ui-fork-1", "seq": 2}


def test_conversation_survives_restart(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    srv = TetherServer(tmp_path / "restart.db", upstream.base_url).start()
    try:
        sdk = client(srv, **{"X-Hermes-Session-Id": "persist-1"})
        sdk.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "remember"}]
        )
        srv.stop()
        srv.start()
        sdk = client(srv, **{"X-Hermes-Session-Id": "persist-1"})
        sdk.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "again"}]
        )
        assert roles_contents(upstream.chat_bodies()[-1]["messages"]) == [
            ("user", "remember"),
            ("assistant", "echo: remember"),
            ("user", "again"),
        ]
    finally:
        srv.stop()


def test_tenants_are_isolated(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    srv = TetherServer(tmp_path / "tenants.db", upstream.base_url)
    key_a, key_b = srv.create_key("tenant-a"), srv.create_key("tenant-b")
    assert key_a.startswith("tk_") and key_a != key_b
    srv.start()
    try:
        a, b = client(srv, key_a), client(srv, key_b)
        minted = a.chat.completions.with_raw_response.create(
            model="scripted", messages=[{"role": "user", "content": "secret of A"}]
        ).headers["x-tether-conversation"]
        with pytest.raises(openai.NotFoundError) as err:
            b.chat.completions.create(
                model="scripted",
                messages=[{"role": "user", "content": "let me in"}],
                extra_headers={"X-Tether-Conversation": minted},
            )
        assert err.value.code == "conversation_not_found"
        r = httpx2.get(
            f"{srv.url}/v1/conversations/{minted}/messages",
            headers={"Authorization": f"Bearer {key_b}"},
        )
        assert r.status_code == 404
        # a client-chosen id is per tenant: B reaches its own, separate "chat-42"
        a.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "A's chat-42"}],
            extra_headers={"X-Hermes-Session-Id": "chat-42"},
        )
        b.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "B's chat-42"}],
            extra_headers={"X-Hermes-Session-Id": "chat-42"},
        )
        sent_b = upstream.chat_bodies()[-1]["messages"]
        assert roles_contents(sent_b) == [("user", "B's chat-42")]
        assert next(c for _, _, c in srv.transcript("chat-42", "tenant-a")) == '"A\'s chat-42"'
        assert next(c for _, _, c in srv.transcript("chat-42", "tenant-b")) == '"B\'s chat-42"'
    finally:
        srv.stop()


def test_ten_concurrent_requests_make_ten_whole_turns_in_order(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue(*[{"delay": 0.05} for _ in range(10)])
    sdk = client(server, **{"X-Hermes-Session-Id": "burst-1"})
    errors: list[BaseException] = []
    started: list[str] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        try:
            with lock:
                started.append(f"msg-{i}")
            sdk.chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": f"msg-{i}"}]
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = server.transcript("burst-1")
    assert [seq for seq, _, _ in rows] == list(range(1, 21))
    pairs = list(zip(rows[0::2], rows[1::2], strict=True))
    for (_, r1, c1), (_, r2, c2) in pairs:
        assert (r1, r2) == ("user", "assistant")
        assert c2 == c1.replace('"msg', '"echo: msg')  # each reply right after its own question
    assert sorted(c for _, r, c in rows if r == "user") == sorted(f'"msg-{i}"' for i in range(10))
    # each upstream call saw every earlier turn whole
    for n, body in enumerate(upstream.chat_bodies()):
        assert len(body["messages"]) == 2 * n + 1


def test_an_alias_reaches_its_conversation(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    sdk = client(server, **{"X-Hermes-Session-Id": "alias-target-1"})
    sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "first"}])
    out = server.cli("conversations", "alias", "alias-target-1", "imported-session-7")
    assert out.returncode == 0, out.stderr
    again = server.cli("conversations", "alias", "alias-target-1", "imported-session-7")
    assert again.returncode == 1 and "already names" in again.stderr
    raw = client(server, **{"X-Hermes-Session-Id": "imported-session-7"}).chat.completions
    resp = raw.with_raw_response.create(
        model="scripted", messages=[{"role": "user", "content": "second"}]
    )
    assert resp.headers["x-hermes-session-id"] == "alias-target-1"
    assert (resp.parse().model_extra or {})["tether"]["conversation_id"] == "alias-target-1"
    assert roles_contents(upstream.chat_bodies()[-1]["messages"]) == [
        ("user", "first"),
        ("assistant", "echo: first"),
        ("user", "second"),
    ]
    assert len(server.transcript("alias-target-1")) == 4
    assert server.transcript("imported-session-7") == []


def test_a_second_server_on_the_same_sqlite_file_refuses_to_start(server: TetherServer) -> None:
    out = server.cli("serve", "--port", "1")  # the lock is checked before anything binds
    assert out.returncode == 2
    assert "already using" in out.stderr and str(server.db_path) in " ".join(out.stderr.split())


def test_concurrency_reject_answers_409_while_a_turn_runs(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"delay": 1.0})
    slow = threading.Thread(
        target=lambda: client(
            server, **{"X-Hermes-Session-Id": "reject-1"}
        ).chat.completions.create(model="scripted", messages=[{"role": "user", "content": "slow"}])
    )
    slow.start()
    time.sleep(0.3)
    r = httpx2.post(
        f"{server.url}/v1/chat/completions",
        headers={"X-Hermes-Session-Id": "reject-1", "X-Tether-Concurrency": "reject"},
        json={"model": "scripted", "messages": [{"role": "user", "content": "now"}]},
    )
    slow.join()
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conversation_busy"
    assert r.headers["retry-after"] == "1"
    assert [c for _, _, c in server.transcript("reject-1")] == ['"slow"', '"echo: slow"']


def test_etag_and_if_match_guard_the_transcript(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """B4: every response names the transcript version; a stale If-Match appends nothing."""
    url = f"{server.url}/v1/chat/completions"
    headers = {"X-Hermes-Session-Id": "etag-1"}
    first = httpx2.post(url, headers=headers, json={"messages": [{"role": "user", "content": "a"}]})
    assert first.headers["etag"] == '"v2"'
    assert httpx2.get(f"{server.url}/v1/conversations/etag-1").headers["etag"] == '"v2"'
    ok = httpx2.post(
        url,
        headers={**headers, "If-Match": '"v2"'},
        json={"messages": [{"role": "user", "content": "b"}]},
    )
    assert ok.status_code == 200 and ok.headers["etag"] == '"v4"'
    stale = httpx2.post(
        url,
        headers={**headers, "If-Match": '"v2"'},
        json={"messages": [{"role": "user", "content": "c"}]},
    )
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "precondition_failed"
    assert stale.headers["etag"] == '"v4"'
    assert len(server.transcript("etag-1")) == 4
    star = httpx2.post(
        url,
        headers={**headers, "If-Match": "*"},
        json={"messages": [{"role": "user", "content": "d"}]},
    )
    assert star.status_code == 200 and star.headers["etag"] == '"v6"'
    missing = httpx2.post(
        url,
        headers={"X-Hermes-Session-Id": "etag-new", "If-Match": "*"},
        json={"messages": [{"role": "user", "content": "x"}]},
    )
    assert missing.status_code == 412 and server.transcript("etag-new") == []
