"""SSE for turns: every event carries its place in the turn's stream as its `id`, so a client
resumes with Last-Event-ID; a comment goes out when the stream is idle; a client that stops
reading is let go after a timeout; the events' iterator is closed when the client goes away.

Our own small ASGI response rather than sse-starlette's: that one sends every event under its
own anyio cancel scope and runs a task group per response, and streamed turns cost 1.66 ms of
server CPU against 0.70 for the same turn as JSON (bench, new conversation, c=1); see
bench/README.md for what this one costs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tether.api.state import AppState
from tether.coordination.stream import TurnStream

log = structlog.get_logger("tether.sse")

# A keep-alive is a comment line and nothing more. Never a blank line after it: once an event
# carried `id:`, the `openai` package's decoder (and httpx-sse's) dispatches an event on every
# blank line, and an empty event's data fails to parse as JSON. A lone comment line is skipped
# by every parser (the SSE spec, browsers' EventSource, openai, httpx-sse).
PING = b": ping\n"


class SendTimeoutError(TimeoutError):
    """The client took no bytes for the send timeout: it stopped reading."""


class EventStream(Response):
    """An ASGI response streaming ready SSE frames from `frames`."""

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        headers: dict[str, str],
        ping: float | None = 15.0,
        send_timeout: float | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.frames = frames
        self.ping = ping
        self.send_timeout = send_timeout
        self.last_send = time.monotonic()
        fixed = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-store",
            "connection": "keep-alive",
            "x-accel-buffering": "no",
        }
        given = {k.lower(): v for k, v in headers.items()}
        self.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in {**fixed, **given}.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        tasks = [asyncio.ensure_future(self._pump(send)), asyncio.ensure_future(_gone(receive))]
        if self.ping:
            tasks.append(asyncio.ensure_future(self._pings(send, self.ping)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            await self.frames.aclose()  # a client that left: the iterator's cleanup runs
        error = outcomes[0]  # the pump's
        if isinstance(error, SendTimeoutError):
            # the client stopped reading: drop the connection (the turn goes on, or was
            # cancelled by the disconnect policy, and stays resumable)
            log.warning("stream.client_stalled", timeout_s=self.send_timeout)
            abort = (scope.get("extensions") or {}).get("tether.abort")
            if abort is not None:
                abort()
        elif isinstance(error, Exception):
            raise error

    async def _send(self, send: Send, body: bytes) -> None:
        self.last_send = time.monotonic()
        message = {"type": "http.response.body", "body": body, "more_body": True}
        if self.send_timeout is None:
            await send(message)
            return
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise SendTimeoutError from None

    async def _pump(self, send: Send) -> None:
        async for frame in self.frames:
            await self._send(send, frame)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pings(self, send: Send, every: float) -> None:
        while True:
            await asyncio.sleep(max(0.0, self.last_send + every - time.monotonic()))
            if time.monotonic() - self.last_send >= every:
                await self._send(send, PING)


async def _gone(receive: Receive) -> None:
    """Returns when the client disconnects."""
    while (await receive())["type"] != "http.disconnect":
        pass


def turn_stream(
    state: AppState, running: TurnStream, after: int, headers: dict[str, str]
) -> EventStream:
    """The turn's events after event `after`, then live ones until it ends."""
    return EventStream(
        _follow(state, running, after),
        headers,
        ping=state.settings.sse_ping_seconds or None,
        send_timeout=state.settings.stream_send_timeout,
    )


def replay_stream(payloads: list[bytes], headers: dict[str, str]) -> EventStream:
    """A stored stream (idempotent replay), with the ids it had: one write, no pings."""
    return EventStream(_numbered(payloads), headers, ping=None)


async def _numbered(payloads: list[bytes]) -> AsyncGenerator[bytes, None]:
    yield b"".join(frame(index, payload) for index, payload in enumerate(payloads, 1))


def frame(index: int, payload: bytes) -> bytes:
    """One SSE event; its id is its place in the turn's stream (for Last-Event-ID)."""
    if payload.startswith(b":"):
        return payload + b"\n"  # an SSE comment line, no blank line after it (see PING)
    return b"id: %d\ndata: %b\n\n" % (index, payload)


async def _follow(state: AppState, running: TurnStream, after: int) -> AsyncGenerator[bytes, None]:
    finished = False
    try:
        # the events already there go out in one write: a resume's backlog is one send, not
        # one per event (live, the upstream's chunks mostly arrive one at a time)
        async for first, payloads in running.follow(after):
            yield b"".join(frame(first + i, p) for i, p in enumerate(payloads))
        finished = True
    finally:
        if not finished and state.settings.on_disconnect == "cancel":
            running.stop()
