"""The SSE response (api/sse.py) at the ASGI level: what it sends when the stream is idle, when
the client leaves, and when the client stops reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from tether.api.sse import PING, EventStream

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Client:
    """The ASGI server's side: records what is sent; disconnects or stops reading on demand."""

    def __init__(self, leave_after: float | None = None, frozen: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.leave_after = leave_after
        self.frozen = frozen
        self.aborted = False

    async def receive(self) -> dict[str, Any]:
        if self.leave_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.leave_after or 0)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.frozen and message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the socket buffer is full and stays full
        self.sent.append(message)

    def abort(self) -> None:
        self.aborted = True

    @property
    def scope(self) -> dict[str, Any]:
        return {"type": "http", "extensions": {"tether.abort": self.abort}}

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def test_idle_stream_gets_pings_then_its_events_then_ends() -> None:
    async def frames() -> AsyncGenerator[bytes, None]:
        await asyncio.sleep(0.35)
        yield b"id: 1\ndata: {}\n\n"

    client = Client()
    await EventStream(frames(), {"X-Tether-Turn": "t1"}, ping=0.1)(
        client.scope, client.receive, client.send
    )
    start = client.sent[0]
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert headers[b"x-tether-turn"] == b"t1"
    bodies = client.bodies
    assert bodies[-2:] == [b"id: 1\ndata: {}\n\n", b""]
    assert 2 <= bodies.count(PING) <= 4
    assert client.sent[-1]["more_body"] is False


async def test_a_client_that_leaves_closes_the_events_iterator() -> None:
    closed = asyncio.Event()

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            yield b"id: 1\ndata: {}\n\n"
            await asyncio.Event().wait()  # a turn that goes on and on
            yield b"never"
        finally:
            closed.set()

    client = Client(leave_after=0.05)
    await asyncio.wait_for(
        EventStream(frames(), {}, ping=None)(client.scope, client.receive, client.send), 2
    )
    assert closed.is_set()
    assert client.bodies == [b"id: 1\ndata: {}\n\n"]
    assert not client.aborted


async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout() -> None:
    async def frames() -> AsyncGenerator[bytes, None]:
        while True:
            yield b"id: 1\ndata: {}\n\n"

    client = Client(frozen=True)
    await asyncio.wait_for(
        EventStream(frames(), {}, ping=None, send_timeout=0.1)(
            client.scope, client.receive, client.send
        ),
        2,
    )
    assert client.aborted


def _decoded(raw: bytes) -> dict[str, list[str]]:
    """The events two real SSE decoders make of a byte stream, fed in small arbitrary pieces:
    the `openai` package's (every client built on the SDK uses it) and httpx-sse's."""
    import httpx_sse._decoders as hs
    from openai._streaming import SSEDecoder

    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    openai_events = [e.data for e in SSEDecoder().iter_bytes(iter(pieces))]
    lines, decoder = hs.SSELineDecoder(), hs.SSEDecoder()
    httpx_events = []
    for piece in pieces:
        for line in lines.decode(piece.decode()):
            event = decoder.decode(line)
            if event is not None:
                httpx_events.append(event.data)
    return {"openai": openai_events, "httpx-sse": httpx_events}


async def test_a_paused_stream_decodes_to_its_events_only() -> None:
    """Pings while the stream is idle, after events carrying `id:` (a model thinking): no
    decoder turns a keep-alive into an event (the openai SDK raised JSONDecodeError on one)."""

    async def frames() -> AsyncGenerator[bytes, None]:
        yield b'id: 1\ndata: {"n": 1}\n\n'
        await asyncio.sleep(0.35)  # three pings' worth of silence
        yield b": tether compacted conversation=c epoch=1\n"  # a comment mid-stream
        yield b'id: 2\ndata: {"n": 2}\n\nid: 3\ndata: [DONE]\n\n'

    client = Client()
    await EventStream(frames(), {}, ping=0.1)(client.scope, client.receive, client.send)
    raw = b"".join(client.bodies)
    assert raw.count(PING) >= 2  # the pings did go out, between the events
    for name, events in _decoded(raw).items():
        assert events == ['{"n": 1}', '{"n": 2}', "[DONE]"], name


async def test_each_event_goes_out_whole_in_one_write() -> None:
    async def frames() -> AsyncGenerator[bytes, None]:
        yield b'id: 1\ndata: {"n": 1}\n\n'
        yield b'id: 2\ndata: {"n": 2}\n\n'

    client = Client()
    await EventStream(frames(), {}, ping=None)(client.scope, client.receive, client.send)
    writes = [b for b in client.bodies if b]
    assert writes == [b'id: 1\ndata: {"n": 1}\n\n', b'id: 2\ndata: {"n": 2}\n\n']
