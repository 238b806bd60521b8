"""SSE framing for turns: every event carries its place in the turn's stream as its `id`, so a
client resumes with Last-Event-ID; a client that stops reading is let go after a timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from tether.api.state import AppState
from tether.engine.types import RunningTurn

log = structlog.get_logger("tether.sse")


class TurnStream(EventSourceResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # the client stopped reading: drop the connection (the turn goes on, or was
            # cancelled by the disconnect policy, and stays resumable)
            log.warning("stream.client_stalled", timeout_s=self.send_timeout)
            abort = (scope.get("extensions") or {}).get("tether.abort")
            if abort is not None:
                abort()


def turn_stream(
    state: AppState, running: RunningTurn, after: int, headers: dict[str, str]
) -> TurnStream:
    """The turn's events after event `after`, then live ones until it ends."""
    return TurnStream(
        _follow(state, running, after),
        headers=headers,
        ping=15,
        sep="\n",
        send_timeout=state.settings.stream_send_timeout,
    )


def replay_stream(payloads: list[bytes], headers: dict[str, str]) -> EventSourceResponse:
    """A stored stream (idempotent replay), with the ids it had."""
    return EventSourceResponse(_numbered(payloads), headers=headers, sep="\n")


async def _numbered(payloads: list[bytes]) -> AsyncIterator[bytes]:
    for index, payload in enumerate(payloads, 1):
        yield frame(index, payload)


def frame(index: int, payload: bytes) -> bytes:
    """One SSE event; its id is its place in the turn's stream (for Last-Event-ID)."""
    if payload.startswith(b":"):
        return payload + b"\n\n"  # an SSE comment: every parser skips it
    return b"id: %d\ndata: %b\n\n" % (index, payload)


async def _follow(state: AppState, running: RunningTurn, after: int) -> AsyncIterator[bytes]:
    finished = False
    try:
        # the events already there go out in one write: a resume's backlog is one send, not
        # one per event (live, the upstream's chunks mostly arrive one at a time)
        async for first, payloads in running.follow(after):
            yield b"".join(frame(first + i, p) for i, p in enumerate(payloads))
        finished = True
    finally:
        if not finished and state.settings.on_disconnect == "cancel":
            state.engine.cancel(running)
