"""An `Upstream` in-process, with no sockets, for tests that run the real app or engine:
`create_app(settings, store=..., upstream=FakeUpstream(...))` — a seam, never a patch.

It answers a script the way the scripted upstream process (`tether.testing.upstream`) does,
with the same items (`tether.testing.script`): each call takes the first queued item whose
``match`` is in its last user message (or that has none), else the default reply, ``"echo:
<last user text>"`` (a summariser request: ``"SUMMARY of N messages"``). An item's keys, all
optional:

- ``content``, ``tool_calls``, ``finish_reason``, ``usage`` (overrides the counted usage),
  ``message_extra`` (more fields on a JSON reply's message), ``no_usage`` (a stream sends no
  usage chunk even when asked);
- ``delay``: seconds before answering; ``wait``: an `asyncio.Event` the answer waits for (this
  fake only: a test holds a turn running for as long as it needs);
- ``status``, ``error``, ``retry_after``: the call fails as `HttpUpstream` fails on that HTTP
  answer (`tether.upstream.errors.map_status_error`, no retries: a 400 with
  ``"code": "context_length_exceeded"`` is a context overflow);
- ``chunk_size``, ``chunk_delay``, ``pause``, ``pause_after_chunks``: how a stream is cut and
  timed; ``chunks``: a list of chunk objects to stream as they are instead (then ``[DONE]``);
- ``malformed``: a reply that is not JSON (`upstream_bad_response`); ``fail_after_chunks``: N —
  the stream breaks after N content chunks (`upstream_stream_interrupted`).

Socket faults (``fault``: reset, truncate, junk, stall) need the real process and are refused.
A ``context_window`` answers prompts longer than it with the server's context-length 400, and
is reported in the model list. Every request body is recorded (``requests``, a copy as sent)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from tether.errors import TetherError
from tether.testing.faults import ScriptedDisconnect, drip
from tether.testing.script import (
    DONE,
    completion,
    context_length_error,
    estimate_prompt_tokens,
    pop_item,
    scripted_error,
    scripted_reply,
    stream_frames,
)
from tether.upstream.base import Chunk
from tether.upstream.errors import map_status_error

_SOCKET_ONLY = ("fault", "fault_after_chunks", "stall", "junk_bytes")


class FakeUpstream:
    """The `Upstream` protocol (`tether.upstream.base`) answered from a script, in-process."""

    def __init__(
        self,
        *items: dict[str, Any],
        context_window: int | None = None,
        models: tuple[str, ...] = ("scripted",),
    ) -> None:
        self.queue: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.context_window = context_window
        self.model_ids = models
        self.closed = False
        self._ids = itertools.count(1)
        self.script(*items)

    # -- for tests --------------------------------------------------------------------------
    def script(self, *items: dict[str, Any]) -> None:
        """Queue replies (see the module docstring)."""
        for item in items:
            refused = [key for key in _SOCKET_ONLY if key in item]
            if refused:
                raise ValueError(f"{refused} needs the scripted upstream process")
        self.queue.extend(items)

    async def wait_for_calls(self, count: int, timeout: float = 5.0) -> None:
        """Return once `count` requests have arrived (a turn is then running upstream)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} upstream calls, waited for {count}")
            await asyncio.sleep(0.001)

    # -- the Upstream protocol --------------------------------------------------------------
    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        item, prompt_tokens, messages = await self._take(body)
        if item.get("malformed"):
            raise TetherError(502, "upstream_bad_response", "the upstream sent invalid JSON")
        reply = scripted_reply(item, messages, prompt_tokens)
        return completion(reply, self._meta(body), item.get("message_extra"))

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        item, prompt_tokens, messages = await self._take(body)
        if "chunks" in item:
            frames: Iterator[tuple[str, bytes]] = iter(
                [*(("content", _frame(c)) for c in item["chunks"]), ("done", DONE)]
            )
        else:
            reply = scripted_reply(item, messages, prompt_tokens)
            frames = stream_frames(reply, self._meta(body), body, item)
        if item.get("malformed"):
            frames = iter([("content", b'data: {"id": "x", "choices": [\n\n')])
        pause = None
        if item.get("pause"):
            pause = (int(item.get("pause_after_chunks") or 0), float(item["pause"]))
        fail_after = item.get("fail_after_chunks")
        dripped = drip(
            frames,
            float(item.get("chunk_delay") or 0),
            None if fail_after is None else int(fail_after),
            None,
            pause,
        )
        try:
            async for frame in dripped:
                payload = frame[5:].strip()
                if payload == b"[DONE]":
                    return
                yield Chunk(payload, _parsed(payload))
        except ScriptedDisconnect as exc:
            raise TetherError(
                502, "upstream_stream_interrupted", f"the upstream stream broke: {exc!r}"
            ) from exc
        raise TetherError(
            502, "upstream_stream_interrupted", "the upstream stream ended without [DONE]"
        )

    async def models(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = []
        for model_id in self.model_ids:
            model: dict[str, Any] = {"id": model_id, "object": "model", "created": 0}
            model["owned_by"] = "tether"
            if self.context_window is not None:
                model["context_window"] = self.context_window
            data.append(model)
        return {"object": "list", "data": data}

    async def aclose(self) -> None:
        self.closed = True

    # -- one call ---------------------------------------------------------------------------
    async def _take(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, list[Any]]:
        """Record the request, then its item, after its wait; raise the scripted failure."""
        sent: dict[str, Any] = orjson.loads(orjson.dumps(body))  # as the wire would carry it
        self.requests.append(sent)
        messages: list[dict[str, Any]] = sent.get("messages") or []
        prompt_tokens = estimate_prompt_tokens(messages)
        too_long = context_length_error(self.context_window, sent, prompt_tokens)
        if too_long is not None:
            raise map_status_error(400, orjson.dumps(too_long), None)
        item = pop_item(self.queue, messages)
        if item.get("delay"):
            await asyncio.sleep(float(item["delay"]))
        if item.get("wait") is not None:
            await item["wait"].wait()
        if item.get("status"):
            retry_after = float(item["retry_after"]) if item.get("retry_after") else None
            error = orjson.dumps(scripted_error(item))
            raise map_status_error(int(item["status"]), error, retry_after)
        return item, prompt_tokens, messages

    def _meta(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{next(self._ids):08x}",
            "created": int(time.time()),
            "model": body.get("model") or "scripted",
        }


def _frame(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _parsed(payload: bytes) -> dict[str, Any]:
    """A frame's JSON, or the error `HttpUpstream` raises for what it would make of it."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise TetherError(
            502, "upstream_bad_response", "the upstream sent a malformed stream chunk"
        ) from exc
    if not isinstance(data, dict):
        raise TetherError(502, "upstream_bad_response", "stream chunk is not an object")
    if "error" in data:
        err = data["error"]
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise TetherError(502, "upstream_error", f"upstream stream error: {msg}")
    return data
