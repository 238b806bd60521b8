"""The in-process coordinator (coordination/local.py): one turn at a time per conversation,
running turns findable by id, finished streams kept while the resume buffer holds them."""

from __future__ import annotations

import asyncio

import pytest

from tether.coordination.local import LocalCoordinator
from tether.coordination.stream import TurnStream
from tether.errors import TetherError

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_reject_answers_409_while_another_turn_holds_the_conversation() -> None:
    coordinator = LocalCoordinator(queue_timeout=5)
    async with coordinator.hold("t", "c1"):
        with pytest.raises(TetherError) as caught:
            async with coordinator.hold("t", "c1", reject=True):
                pass
        assert caught.value.status == 409 and caught.value.code == "conversation_busy"
        async with coordinator.hold("t", "c2", reject=True):  # another conversation is free
            pass
        async with coordinator.hold("other-tenant", "c1", reject=True):  # so is another tenant's
            pass


async def test_waiters_queue_in_order_and_time_out_with_409() -> None:
    coordinator = LocalCoordinator(queue_timeout=0.05)
    order: list[int] = []

    async def turn(n: int) -> None:
        async with coordinator.hold("t", "c1"):
            order.append(n)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(turn(n) for n in range(3)))
    assert order == [0, 1, 2]
    async with coordinator.hold("t", "c1"):
        with pytest.raises(TetherError) as caught:
            async with coordinator.hold("t", "c1"):
                pass
    assert caught.value.code == "conversation_busy"


async def test_streams_are_found_while_running_and_while_buffered_after() -> None:
    coordinator = LocalCoordinator(resume_bytes=5000)
    streams = [TurnStream(stream=True, turn_id=f"turn_{i}") for i in range(3)]
    for s in streams:
        coordinator.open(s)
    assert coordinator.find("turn_1") is streams[1]
    assert coordinator.running() == streams
    for s in streams:
        s.publish([b"x" * 1000])
        s.close("completed")
        coordinator.finish(s)
    assert coordinator.running() == []
    # each finished stream holds ~3 KB (its bytes and its objects): the oldest is let go
    assert coordinator.find("turn_0") is None
    assert coordinator.find("turn_2") is streams[2]
    json_turn = TurnStream(stream=False, turn_id="turn_json")
    coordinator.open(json_turn)
    json_turn.close("completed")
    coordinator.finish(json_turn)
    assert coordinator.find("turn_json") is None  # nothing to resume


async def test_a_followers_sees_the_backlog_then_live_payloads_until_close() -> None:
    stream = TurnStream(stream=True)
    stream.publish([b"a", b"b"])
    seen: list[tuple[int, list[bytes]]] = []

    async def follow() -> None:
        async for first, batch in stream.follow(after=1):
            seen.append((first, batch))

    task = asyncio.ensure_future(follow())
    await asyncio.sleep(0)
    stream.publish([b"c"])
    await asyncio.sleep(0)
    stream.close("completed")
    await task
    assert seen == [(2, [b"b"]), (3, [b"c"])]
    assert stream.status == "completed" and not stream.stop()  # an ended turn is not stopped
