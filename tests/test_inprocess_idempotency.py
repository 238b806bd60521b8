"""Idempotency through the seams (docs/contract.md §5): a retried request replays the first
result and never runs a second turn — the real app in-process, FakeUpstream, the memory store."""

from __future__ import annotations

import asyncio

import pytest

from tests.inprocess import error_code, running, user
from tether.testing.fake import FakeUpstream

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_same_key_and_body_replay_the_stored_response() -> None:
    async with running() as app:
        headers = {"X-Hermes-Session-Id": "idem-1", "Idempotency-Key": "msg-0001"}
        first = await app.chat([user("hello")], headers)
        assert first.status_code == 200 and "idempotent-replayed" not in first.headers
        for _ in range(3):
            again = await app.chat([user("hello")], headers)
            assert again.status_code == 200
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content
            for name in ("x-hermes-session-id", "x-tether-turn", "x-tether-epoch", "etag"):
                assert again.headers[name] == first.headers[name], name
        assert len(app.upstream.requests) == 1
        assert len(await app.transcript("idem-1")) == 2
        other = await app.chat([user("hello")], {**headers, "Idempotency-Key": "msg-0002"})
        assert "idempotent-replayed" not in other.headers
        assert other.headers["x-tether-turn"] != first.headers["x-tether-turn"]
        assert len(await app.transcript("idem-1")) == 4


async def test_a_stream_is_replayed_as_the_same_events() -> None:
    async with running() as app:
        headers = {"X-Hermes-Session-Id": "idem-stream", "Idempotency-Key": "s-1"}
        extra = {"stream": True, "stream_options": {"include_usage": True}}
        first = await app.chat([user("stream me")], headers, **extra)
        again = await app.chat([user("stream me")], headers, **extra)
        assert again.headers["idempotent-replayed"] == "true"
        events = [line for line in first.text.splitlines() if line]
        assert events[-1] == "data: [DONE]"
        assert [line for line in again.text.splitlines() if line] == events  # ids included
        assert len(app.upstream.requests) == 1


async def test_the_same_key_with_another_body_is_422() -> None:
    async with running() as app:
        headers = {"X-Hermes-Session-Id": "idem-reuse", "Idempotency-Key": "k-1"}
        assert (await app.chat([user("one")], headers)).status_code == 200
        other = await app.chat([user("two")], headers)
        assert other.status_code == 422
        assert error_code(other) == "idempotency_key_reused"
        # the same body on another conversation is another request too
        elsewhere = await app.chat([user("one")], {**headers, "X-Hermes-Session-Id": "idem-2"})
        assert elsewhere.status_code == 422
        assert len(await app.transcript("idem-reuse")) == 2
        assert await app.transcript("idem-2") == []
        assert len(app.upstream.requests) == 1


async def test_the_same_key_while_the_first_runs_is_409_then_replays() -> None:
    release = asyncio.Event()
    async with running(FakeUpstream({"wait": release})) as app:
        headers = {"X-Hermes-Session-Id": "idem-run", "Idempotency-Key": "busy-1"}
        first = asyncio.create_task(app.chat([user("slow")], headers))
        await app.upstream.wait_for_calls(1)
        busy = await app.chat([user("slow")], headers)
        assert busy.status_code == 409
        assert error_code(busy) == "idempotency_key_in_use"
        assert busy.headers["retry-after"] == "1"
        release.set()
        done = await first
        replay = await app.chat([user("slow")], headers)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == done.json()
        assert len(app.upstream.requests) == 1


async def test_a_failed_turn_frees_its_key_so_the_retry_runs() -> None:
    async with running(FakeUpstream({"status": 500})) as app:
        headers = {"X-Hermes-Session-Id": "idem-fail", "Idempotency-Key": "f-1"}
        failed = await app.chat([user("try")], headers)
        assert failed.status_code == 502 and error_code(failed) == "upstream_error"
        retry = await app.chat([user("try")], headers)
        assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers
        assert await app.transcript("idem-fail") == [("user", "try"), ("assistant", "echo: try")]
        assert len(app.upstream.requests) == 2
        replay = await app.chat([user("try")], headers)
        assert replay.headers["idempotent-replayed"] == "true"
        assert len(app.upstream.requests) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "bad\tkey"], ids=["empty", "too_long", "ctrl"])
async def test_a_malformed_key_is_400(key: str) -> None:
    async with running() as app:
        r = await app.chat([user("x")], {"X-Hermes-Session-Id": "idem-bad", "Idempotency-Key": key})
        assert r.status_code == 400
        assert error_code(r) == "invalid_idempotency_key"
        assert app.upstream.requests == []
        assert await app.transcript("idem-bad") == []
