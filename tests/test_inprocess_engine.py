"""The engine through its seams, with no app, no process and no socket: `Engine` over the
in-memory store, the in-process `FakeUpstream`, a protocol adapter that keeps the typed events
it is given, and coordinators swapped in — the seams a second protocol and a second replica plug
into. What is checked is what the engine publishes and what it stores."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from tether.config import Settings
from tether.coordination.local import LocalCoordinator
from tether.engine.events import (
    Compacted,
    Failed,
    Finished,
    Started,
    TextDelta,
    TurnEvent,
    Usage,
)
from tether.engine.incoming import Incoming
from tether.engine.request import TurnInfo, TurnRequest
from tether.engine.service import Engine
from tether.errors import TetherError
from tether.store.memory import MemoryStore
from tether.store.memory_db import MemoryDatabase
from tether.testing.fake import FakeUpstream

pytestmark = pytest.mark.asyncio(loop_scope="session")

TENANT = "tenant-a"


class Recorder:
    """A protocol adapter that renders nothing and keeps every event (a `Projection`)."""

    def __init__(self) -> None:
        self.events: list[TurnEvent] = []

    def render(self, event: TurnEvent) -> list[bytes]:
        self.events.append(event)
        return [type(event).__name__.encode()]

    def headers(self, info: TurnInfo) -> dict[str, str]:
        return {"X-Test-Conversation": info.conversation_id}

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


class Holding(LocalCoordinator):
    """The in-process coordinator, keeping a record of every lock taken."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.held: list[tuple[str, str, bool]] = []

    def hold(
        self, tenant_id: str, conversation_id: str, *, reject: bool = False
    ) -> AbstractAsyncContextManager[None]:
        self.held.append((tenant_id, conversation_id, reject))
        return super().hold(tenant_id, conversation_id, reject=reject)


class NoViewCache(LocalCoordinator):
    """A coordinator for replicas sharing a database with no way to tell a cached view is
    current: every view is read again."""

    def view_current(self, tenant_id: str, conversation_id: str, state: tuple[int, int]) -> bool:
        return False


def settings(**overrides: Any) -> Settings:
    return Settings(database_url="memory://", default_model="scripted", **overrides)


async def engine_on(
    store: MemoryStore,
    upstream: FakeUpstream,
    coordinator: LocalCoordinator | None = None,
    **overrides: Any,
) -> Engine:
    await store.open()
    await store.migrate()
    return Engine(store, upstream, settings(**overrides), coordinator=coordinator)


def request(
    text: str, conversation_id: str | None, projection: Recorder, stream: bool = False, **kw: Any
) -> TurnRequest:
    messages = Incoming([{"role": "user", "content": text}], _parse)
    return TurnRequest(
        tenant_id=TENANT,
        conversation_id=conversation_id,
        messages=messages,
        model="scripted",
        stream=stream,
        params={},
        projection=projection,
        **kw,
    )


def _parse(raw: Any, index: int) -> Any:
    from tether.api.models import parse_message

    return parse_message(raw, index, 1_000_000)


async def finished(engine: Engine, req: TurnRequest) -> tuple[Any, TurnInfo]:
    run, info = await engine.start(req)
    await run.out.ended()
    if not req.stream:
        await run.result  # a JSON turn's failure after it started: raised here
    return run, info


async def transcript(store: MemoryStore, cid: str) -> list[tuple[str, Any]]:
    conv = await store.resolve(TENANT, cid)
    assert conv is not None
    return [(m.role, m.content) for m in await store.load_messages(conv.pk, 0, conv.last_seq)]


async def test_a_json_turn_publishes_started_then_finished_and_stores_both_messages() -> None:
    store, up, out = MemoryStore(), FakeUpstream(), Recorder()
    engine = await engine_on(store, up)
    run, info = await finished(engine, request("hello", "c1", out))
    assert out.kinds() == ["Started", "Finished"]
    started, end = out.events
    assert isinstance(started, Started) and isinstance(end, Finished)
    assert started.info.conversation_id == info.conversation_id == "c1"
    assert end.reply.content == "echo: hello" and end.info.version == 2
    assert await run.result == b"Finished"  # the body is what the adapter rendered
    assert run.final_headers == {"X-Test-Conversation": "c1"}
    assert await transcript(store, "c1") == [("user", "hello"), ("assistant", "echo: hello")]


async def test_a_stream_publishes_deltas_then_usage_then_finished_after_the_commit() -> None:
    store, out = MemoryStore(), Recorder()
    engine = await engine_on(store, FakeUpstream({"content": "one two three", "chunk_size": 4}))
    run, _ = await finished(engine, request("hi", "c1", out, stream=True))
    kinds = out.kinds()
    assert kinds[0] == "Started" and kinds[-1] == "Finished"
    text = "".join(e.text for e in out.events if isinstance(e, TextDelta))
    assert text == "one two three"
    usage = [e for e in out.events if isinstance(e, Usage)]
    assert len(usage) == 1 and not usage[0].estimated and usage[0].usage["completion_tokens"] > 0
    # every event's rendering went to the stream, in order, the last after the commit
    assert run.out.log == [k.encode() for k in kinds]
    assert run.out.status == "completed"
    assert await transcript(store, "c1") == [("user", "hi"), ("assistant", "one two three")]


async def test_a_stream_without_usage_gets_an_estimate_marked_as_one() -> None:
    out = Recorder()
    engine = await engine_on(MemoryStore(), FakeUpstream({"content": "x", "no_usage": True}))
    await finished(engine, request("hi", "c1", out, stream=True))
    usage = [e for e in out.events if isinstance(e, Usage)]
    assert [u.estimated for u in usage] == [True]
    assert usage[0].usage["estimated"] is True


async def test_a_failed_call_publishes_failed_and_stores_nothing() -> None:
    store, out = MemoryStore(), Recorder()
    engine = await engine_on(store, FakeUpstream({"status": 500, "error": "boom"}))
    with pytest.raises(TetherError) as caught:
        await engine.start(request("hi", "c1", out, stream=True))
    assert caught.value.status == 502
    assert out.kinds() == ["Failed"]
    failed = out.events[0]
    assert isinstance(failed, Failed) and failed.error is caught.value
    assert await store.resolve(TENANT, "c1") is None


async def test_a_turn_holds_its_conversation_on_the_coordinator() -> None:
    coordinator = Holding()
    engine = await engine_on(MemoryStore(), FakeUpstream(), coordinator)
    await finished(engine, request("a", "c1", Recorder()))
    await finished(engine, request("b", "c1", Recorder(), concurrency="reject"))
    assert coordinator.held == [(TENANT, "c1", False), (TENANT, "c1", True)]
    assert coordinator.running() == []  # both ended; neither is left registered


async def test_a_stopped_turn_is_cancelled_and_its_stream_says_so() -> None:
    gate = asyncio.Event()
    store, out = MemoryStore(), Recorder()
    upstream = FakeUpstream({"wait": gate})
    engine = await engine_on(store, upstream)
    task = asyncio.ensure_future(engine.start(request("hi", "c1", out, stream=True)))
    await upstream.wait_for_calls(1)
    (running,) = engine.coordinator.running()
    assert running.stop()
    with pytest.raises(TetherError) as caught:
        await task
    assert caught.value.code == "turn_cancelled"
    assert running.status == "cancelled" and out.kinds() == ["Failed"]
    assert await store.resolve(TENANT, "c1") is None


async def test_compaction_is_published_before_the_answer() -> None:
    store, out = MemoryStore(), Recorder()
    engine = await engine_on(store, FakeUpstream(), default_context_window=1000)
    for i in range(4):
        text = f"turn {i} " + "word " * 50
        await finished(engine, request(text, "c1", Recorder(), compaction="off"))
    await finished(engine, request("now", "c1", out, compaction="now"))
    assert out.kinds() == ["Started", "Compacted", "Finished"]
    compacted = out.events[1]
    assert isinstance(compacted, Compacted) and compacted.epoch == 1
    assert compacted.tokens_after is not None and compacted.tokens_before is not None
    assert compacted.tokens_after < compacted.tokens_before
    assert len(await transcript(store, "c1")) == 10  # nothing of the transcript is gone


async def replicas(coordinator: type[LocalCoordinator]) -> tuple[Engine, Engine, FakeUpstream]:
    """Two engines ("replicas") on one database, each with its own coordinator."""
    shared = MemoryDatabase()
    up = FakeUpstream()
    a = await engine_on(MemoryStore(owner="a", database=shared), up, coordinator(owner="a"))
    b = await engine_on(MemoryStore(owner="b", database=shared), up, coordinator(owner="b"))
    return a, b, up


async def test_with_a_view_cache_only_one_writer_may_use_a_cached_view_is_refused() -> None:
    a, b, _ = await replicas(LocalCoordinator)
    await finished(a, request("one", "c1", Recorder()))
    await finished(a, request("two", "c1", Recorder()))  # a caches the view as it commits
    await finished(b, request("three", "c1", Recorder()))  # b commits behind a's back
    with pytest.raises(TetherError) as caught:
        await finished(a, request("four", "c1", Recorder()))
    # a's stale view is never used to write: its commit is refused, not forked or lost
    assert caught.value.code == "conversation_busy"
    assert [c for _, c in await transcript(a.store, "c1")] == [
        "one",
        "echo: one",
        "two",
        "echo: two",
        "three",
        "echo: three",
    ]


async def test_a_coordinator_that_cannot_vouch_for_views_makes_every_turn_read_the_store() -> None:
    a, b, up = await replicas(NoViewCache)
    await finished(a, request("one", "c1", Recorder()))
    await finished(a, request("two", "c1", Recorder()))
    await finished(b, request("three", "c1", Recorder()))
    await finished(a, request("four", "c1", Recorder()))
    sent = [(m["role"], m["content"]) for m in up.requests[-1]["messages"]]
    said = ["one", "two", "three"]
    expected = [p for s in said for p in (("user", s), ("assistant", f"echo: {s}"))]
    assert sent == [*expected, ("user", "four")]
