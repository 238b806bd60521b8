"""The merge rule through the seams (docs/contract.md §3): the real app in-process, FakeUpstream,
the in-memory store; asserted through HTTP and what the upstream was sent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.inprocess import assistant, error_code, pairs, running, tether_of, user

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_bridge_appends_its_new_message_and_the_upstream_gets_the_whole_history() -> None:
    async with running() as app:
        for text in ("one", "two", "three"):
            r = await app.say("bridge-1", text)
            assert r.headers["x-hermes-session-id"] == "bridge-1"
            assert r.headers["x-tether-conversation"] == "bridge-1"
            assert r.json()["choices"][0]["message"]["content"] == f"echo: {text}"
        assert [pairs(b["messages"]) for b in app.upstream.requests] == [
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
        assert await app.transcript("bridge-1") == [
            ("user", "one"),
            ("assistant", "echo: one"),
            ("user", "two"),
            ("assistant", "echo: two"),
            ("user", "three"),
            ("assistant", "echo: three"),
        ]


async def test_a_full_history_client_appends_only_what_is_new() -> None:
    async with running() as app:
        headers = {"X-Tether-Conversation": "ui-1"}
        history: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}]
        for text in ("q1", "q2", "q3"):
            history.append(user(text))
            r = await app.chat(history, headers)
            assert r.status_code == 200, r.text
            history.append(assistant(r.json()["choices"][0]["message"]["content"]))
        assert await app.transcript("ui-1") == pairs(history)
        assert app.sent() == pairs(history[:-1])  # each message once, the system prompt first
        assert r.headers["etag"] == '"v7"'


async def test_a_changed_system_prompt_is_recorded_and_used_from_that_turn_on() -> None:
    async with running() as app:
        headers = {"X-Hermes-Session-Id": "sys-1"}
        system = {"role": "system", "content": "Old rules."}
        for text in ("a", "b"):
            assert (await app.chat([system, user(text)], headers)).status_code == 200
        new = {"role": "system", "content": "New rules."}
        assert (await app.chat([new, user("c")], headers)).status_code == 200
        roles = [role for role, _ in await app.transcript("sys-1")]
        # the prompt once while it did not change, then the new one where it changed
        assert roles == ["system", *["user", "assistant"] * 2, "system", "user", "assistant"]
        sent = app.upstream.requests[-1]["messages"]
        assert [m["role"] for m in sent].count("system") == 1
        assert sent[0] == {"role": "system", "content": "New rules."}


async def test_a_history_that_diverges_forks_and_leaves_the_original_intact() -> None:
    async with running() as app:
        headers = {"X-Tether-Conversation": "ui-fork"}
        history: list[dict[str, Any]] = []
        for text in ("first", "second"):
            history.append(user(text))
            r = await app.chat(history, headers)
            history.append(assistant(r.json()["choices"][0]["message"]["content"]))
        before = await app.transcript("ui-fork")
        edited = [*history[:2], user("second, edited")]
        r = await app.chat(edited, headers)
        assert r.status_code == 200, r.text
        fork = r.headers["x-tether-conversation"]
        assert fork.startswith("conv_") and len(fork) == 5 + 32
        assert tether_of(r)["forked_from"] == {"conversation_id": "ui-fork", "seq": 2}
        assert await app.transcript("ui-fork") == before
        assert await app.transcript(fork) == [
            ("user", "first"),
            ("assistant", "echo: first"),
            ("user", "second, edited"),
            ("assistant", "echo: second, edited"),
        ]
        info = await app.get(f"/v1/conversations/{fork}")
        assert info["forked_from"] == {"conversation_id": "ui-fork", "seq": 2}
        # the client keeps naming the original: its next request grows the fork, not a new one
        grown = [*edited, assistant("echo: second, edited"), user("third")]
        r = await app.chat(grown, headers)
        assert r.headers["x-tether-conversation"] == fork
        assert len(await app.transcript(fork)) == 6
        assert await app.transcript("ui-fork") == before


async def test_a_history_that_adds_nothing_is_400_and_stores_nothing() -> None:
    async with running() as app:
        headers = {"X-Tether-Conversation": "ui-same"}
        history = [user("hello")]
        r = await app.chat(history, headers)
        history.append(assistant(r.json()["choices"][0]["message"]["content"]))
        again = await app.chat(history, headers)
        assert again.status_code == 400
        assert error_code(again) == "no_new_messages"
        assert len(await app.transcript("ui-same")) == 2
        assert len(app.upstream.requests) == 1


async def test_a_stale_if_match_conflicts_and_appends_nothing() -> None:
    async with running() as app:
        first = await app.say("etag-1", "a")
        assert first.headers["etag"] == '"v2"'
        ok = await app.say("etag-1", "b", **{"If-Match": '"v2"'})
        assert ok.headers["etag"] == '"v4"'
        stale = await app.chat([user("c")], {"X-Hermes-Session-Id": "etag-1", "If-Match": '"v2"'})
        assert stale.status_code == 412
        assert error_code(stale) == "precondition_failed"
        assert stale.headers["etag"] == '"v4"'
        assert len(await app.transcript("etag-1")) == 4
        assert len(app.upstream.requests) == 2  # the stale request never reached the model
        missing = await app.chat([user("x")], {"X-Hermes-Session-Id": "etag-new", "If-Match": "*"})
        assert missing.status_code == 412
        assert await app.transcript("etag-new") == []


async def test_a_tool_round_appends_the_results_a_client_sends() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    async with running() as app:
        app.upstream.script({"tool_calls": [call]})
        r = await app.say("tools-1", "use the tool")
        assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
        result = {"role": "tool", "tool_call_id": "call_1", "content": "42"}
        r = await app.chat([result], {"X-Hermes-Session-Id": "tools-1"})
        assert r.status_code == 200, r.text
        assert [m["role"] for m in app.upstream.requests[-1]["messages"]] == [
            "user",
            "assistant",
            "tool",
        ]
        assert app.upstream.requests[-1]["messages"][1]["tool_calls"] == [call]
        roles = [role for role, _ in await app.transcript("tools-1")]
        assert roles == ["user", "assistant", "tool", "assistant"]
