"""The steps of a turn through the seams (docs/contract.md §1, §2, §4, §5): resolve, queue,
call, commit, and where it ran — the real app in-process with FakeUpstream and the in-memory
store, asserted through HTTP and what the upstream was sent."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.inprocess import error_code, running, sse_data, tether_of, user
from tether.testing.fake import FakeUpstream

pytestmark = pytest.mark.asyncio(loop_scope="session")

TURN_ID = re.compile(r"turn_[0-9a-f]{32}")


async def test_a_new_conversation_gets_a_minted_id_and_says_where_it_ran() -> None:
    async with running() as app:
        r = await app.chat([user("hello")])
        assert r.status_code == 200, r.text
        cid = r.headers["x-tether-conversation"]
        assert re.fullmatch(r"conv_[0-9a-f]{32}", cid)
        assert r.headers["x-hermes-session-id"] == cid
        assert TURN_ID.fullmatch(r.headers["x-tether-turn"])
        assert r.headers["x-tether-epoch"] == "0"
        assert r.headers["etag"] == '"v2"'
        assert tether_of(r) == {
            "conversation_id": cid,
            "turn_id": r.headers["x-tether-turn"],
            "epoch": 0,
            "compacted": False,
            "tokens_before": None,
            "tokens_after": None,
        }
        assert await app.transcript(cid) == [("user", "hello"), ("assistant", "echo: hello")]


async def test_an_unknown_minted_id_is_404_and_reaches_no_model() -> None:
    async with running() as app:
        cid = "conv_" + "0" * 32
        r = await app.chat([user("hi")], {"X-Tether-Conversation": cid})
        assert r.status_code == 404
        assert error_code(r) == "conversation_not_found"
        assert app.upstream.requests == []
        missing = await app.http.get(f"/v1/conversations/{cid}")
        assert missing.status_code == 404
        # a bridge's own id is created on first use instead
        created = await app.say("bridge-own-id", "hi")
        assert created.headers["x-tether-conversation"] == "bridge-own-id"


async def test_two_different_ids_in_one_request_are_400() -> None:
    async with running() as app:
        headers = {"X-Tether-Conversation": "a-1", "X-Hermes-Session-Id": "b-1"}
        r = await app.chat([user("hi")], headers)
        assert r.status_code == 400
        assert error_code(r) == "conflicting_conversation_ids"
        assert app.upstream.requests == []


async def test_reject_answers_409_while_a_turn_runs_and_enqueue_waits_its_turn() -> None:
    release = asyncio.Event()
    async with running(FakeUpstream({"wait": release, "content": "slow done"})) as app:
        slow = asyncio.create_task(app.say("busy-1", "slow"))
        await app.upstream.wait_for_calls(1)
        busy = await app.chat(
            [user("now")], {"X-Hermes-Session-Id": "busy-1", "X-Tether-Concurrency": "reject"}
        )
        assert busy.status_code == 409
        assert error_code(busy) == "conversation_busy"
        assert busy.headers["retry-after"] == "1"
        queued = asyncio.create_task(app.say("busy-1", "queued"))
        await asyncio.sleep(0.05)
        assert len(app.upstream.requests) == 1  # waiting in line, not at the model
        release.set()
        assert (await slow).json()["choices"][0]["message"]["content"] == "slow done"
        await queued
        assert await app.transcript("busy-1") == [
            ("user", "slow"),
            ("assistant", "slow done"),
            ("user", "queued"),
            ("assistant", "echo: queued"),
        ]
        assert app.sent()[-1] == ("user", "queued")
        assert len(app.upstream.requests) == 2


async def test_a_failed_upstream_call_stores_nothing() -> None:
    async with running() as app:
        first = await app.say("fail-1", "hi")
        app.upstream.script({"status": 500})
        failed = await app.chat([user("boom")], {"X-Hermes-Session-Id": "fail-1"})
        assert failed.status_code == 502
        assert error_code(failed) == "upstream_error"
        assert await app.transcript("fail-1") == [("user", "hi"), ("assistant", "echo: hi")]
        conv = await app.http.get("/v1/conversations/fail-1")
        assert conv.headers["etag"] == first.headers["etag"] == '"v2"'
        again = await app.say("fail-1", "retry")
        assert again.headers["etag"] == '"v4"'
        assert ("user", "boom") not in app.sent()  # the failed turn left no message behind
        # a failed first turn does not create the conversation at all
        app.upstream.script({"status": 503})
        r = await app.chat([user("x")], {"X-Hermes-Session-Id": "never-1"})
        assert r.status_code == 502
        assert (await app.http.get("/v1/conversations/never-1")).status_code == 404


async def test_an_upstream_error_keeps_its_status_code_and_param() -> None:
    error = {"message": "bad temperature", "code": "invalid_value", "param": "temperature"}
    async with running(FakeUpstream({"status": 400, "error": error})) as app:
        r = await app.chat([user("hi")], {"X-Hermes-Session-Id": "e-1"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_value"
        assert r.json()["error"]["param"] == "temperature"
        assert await app.transcript("e-1") == []


async def test_a_committed_turn_is_readable_by_its_id() -> None:
    async with running() as app:
        r = await app.say("rec-1", "what")
        turn_id = r.headers["x-tether-turn"]
        turn = await app.get(f"/v1/conversations/rec-1/turns/{turn_id}")
        assert turn["status"] == "completed" and turn["conversation_id"] == "rec-1"
        assert [(m["seq"], m["role"], m["content"]) for m in turn["messages"]] == [
            (1, "user", "what"),
            (2, "assistant", "echo: what"),
        ]
        assert turn["usage"] == r.json()["usage"]
        missing = await app.http.get("/v1/conversations/rec-1/turns/turn_nope")
        assert missing.status_code == 404
        assert error_code(missing) == "turn_not_found"


async def test_a_stream_says_where_it_ran_on_its_final_chunk() -> None:
    async with running() as app:
        await app.say("stream-1", "first")
        r = await app.chat(
            [user("alpha")],
            {"X-Hermes-Session-Id": "stream-1"},
            stream=True,
            stream_options={"include_usage": True},
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-tether-conversation"] == "stream-1"
        events = sse_data(r)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
        assert text == "echo: alpha"
        final = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
        assert final["tether"]["conversation_id"] == "stream-1"
        assert final["tether"]["turn_id"] == r.headers["x-tether-turn"]
        assert final["tether"]["epoch"] == 0 and final["tether"]["compacted"] is False
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
        assert app.upstream.requests[-1]["stream"] is True
        assert r.headers["etag"] == '"v4"'
        assert (await app.transcript("stream-1"))[-1] == ("assistant", "echo: alpha")


async def test_a_stream_broken_before_its_first_token_is_an_http_error() -> None:
    async with running(FakeUpstream({"malformed": True})) as app:
        r = await app.chat([user("x")], {"X-Hermes-Session-Id": "broken-1"}, stream=True)
        assert r.status_code == 502
        assert error_code(r) == "upstream_bad_response"
        assert await app.transcript("broken-1") == []


async def test_a_stream_broken_mid_answer_ends_with_an_error_event_and_stores_nothing() -> None:
    async with running() as app:
        await app.say("mid-1", "hi")
        app.upstream.script({"content": "a long answer here", "fail_after_chunks": 2})
        r = await app.chat([user("more")], {"X-Hermes-Session-Id": "mid-1"}, stream=True)
        assert r.status_code == 200  # the headers went out with the first token
        events = sse_data(r)
        assert events[-1]["error"]["code"] == "upstream_stream_interrupted"
        assert "[DONE]" not in events
        assert len(await app.transcript("mid-1")) == 2
        record = await app.get(f"/v1/conversations/mid-1/turns/{r.headers['x-tether-turn']}")
        assert record["status"] == "incomplete"
