"""A turn's stream log (coordination/stream.py TurnStream): finished streams stay in memory for
resuming, within TETHER_RESUME_BUFFER_BYTES, which counts payload bytes; so what a payload
holds in memory must be close to its length."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from tether.coordination.stream import TurnStream

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_published_payloads_hold_about_their_length() -> None:
    running = TurnStream(stream=True)
    frame = {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "x"}}]}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1000):
            running.publish([orjson.dumps({**frame, "n": i})])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert running.size < 100_000
    # ~75-byte payloads: a bytes object's header and a list slot each, not orjson's 4 KiB buffer
    assert held < 200 * 1000, held
    assert [p[-6:] for p in running.log[:2]] == [b'"n":0}', b'"n":1}']
