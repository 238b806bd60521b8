"""Chat Completions: a turn's events as the JSON body or the SSE chunks of
`POST /v1/chat/completions`.

The upstream speaks Chat Completions too, so a stream's deltas go out as the upstream's own
bytes. The chunks that end the stream (the one with `finish_reason`, usage, anything after) are
held until the turn has committed; the finish chunk then carries the `tether` object, and
`[DONE]` follows. A failure ends the stream with an error event."""

from __future__ import annotations

import time
from typing import Any

import orjson

from tether.engine.events import (
    Compacted,
    Failed,
    Finished,
    TextDelta,
    ToolAwaiting,
    ToolCallDelta,
    ToolFinished,
    ToolStarted,
    TurnEvent,
    Usage,
)
from tether.engine.request import TurnInfo
from tether.protocols.common import tether_object, turn_headers

DONE = b"[DONE]"


class ChatCompletions:
    """One turn's rendering (a `Projection`): `stream` as SSE chunks, else one JSON body."""

    def __init__(self, *, stream: bool, include_usage: bool = False) -> None:
        self.stream = stream
        self.include_usage = include_usage
        self._held: list[dict[str, Any] | None] = []  # None: where estimated usage goes
        self._estimated: dict[str, Any] | None = None
        self._meta: tuple[Any, Any, Any] | None = None  # the stream's id, created, model

    def headers(self, info: TurnInfo) -> dict[str, str]:
        return turn_headers(info)

    def render(self, event: TurnEvent) -> list[bytes]:
        if isinstance(event, TextDelta | ToolCallDelta):
            return self._delta(event.chunk.data, event.chunk.raw)
        if isinstance(event, Usage):
            if event.chunk is not None:
                return self._delta(event.chunk.data, event.chunk.raw)
            if event.estimated and self.include_usage:
                self._estimated = event.usage
                self._held.append(None)
            return []
        if isinstance(event, Finished):
            return self._stream_end(event) if self.stream else [self._body(event)]
        if isinstance(event, Compacted) and self.stream:
            return [
                f": tether compacted conversation={event.conversation_id} epoch={event.epoch} "
                f"tokens_before={event.tokens_before} tokens_after={event.tokens_after}".encode()
            ]
        if isinstance(event, Failed) and self.stream:
            return [orjson.dumps(event.error.body())]
        if isinstance(event, ToolStarted | ToolAwaiting | ToolFinished) and self.stream:
            return [self._progress(event)]
        return []  # Started; a JSON turn's compaction and failure are told otherwise

    def _delta(self, data: dict[str, Any], raw: bytes) -> list[bytes]:
        if self._meta is None and data.get("id"):
            self._meta = (data.get("id"), data.get("created"), data.get("model"))
        choices = data.get("choices")
        if self._held or not choices or any(c.get("finish_reason") for c in choices):
            self._held.append(data)
            return []
        return [raw]

    def _progress(self, event: ToolStarted | ToolAwaiting | ToolFinished) -> bytes:
        """A server tool's progress as a chunk with an empty delta (which every client reads
        as nothing to show) and a `tether.tool` object saying what runs."""
        chunk_id, created, model = self._meta or (None, None, None)
        if isinstance(event, ToolStarted):
            tool: dict[str, Any] = {"event": "started", "arguments": event.arguments}
        elif isinstance(event, ToolAwaiting):
            tool = {
                "event": "approval_required",
                "arguments": event.arguments,
                "timeout": event.timeout,
            }
        else:
            tool = {
                "event": "finished",
                "status": event.status,
                "ms": event.ms,
                "output_chars": event.output_chars,
            }
        tool.update(round=event.round, call_id=event.call_id, name=event.name)
        return orjson.dumps(
            {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created or int(time.time()),
                "model": model or "",
                "choices": [{"index": 0, "delta": {}, "finish_reason": None}],
                "tether": {"tool": tool},
            }
        )

    def _body(self, event: Finished) -> bytes:
        response = event.response or {}
        _fill_required(response)
        response["tether"] = tether_object(event.info)
        return orjson.dumps(response)

    def _stream_end(self, event: Finished) -> list[bytes]:
        chunk_id, created, model = self._meta or (None, None, None)
        meta = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created or int(time.time()),
            "model": model or event.model,
        }
        held = [
            {**meta, "choices": [], "usage": self._estimated} if data is None else data
            for data in self._held
        ]
        finish = next((c for c in held if c.get("choices")), None)
        if finish is None:
            finish = {
                **meta,
                "choices": [{"index": 0, "delta": {}, "finish_reason": event.finish_reason}],
            }
            held.insert(0, finish)
        tail = []
        for data in held:
            if data is finish:
                data = {**data, "tether": tether_object(event.info)}
            elif not data.get("choices") and not self.include_usage:
                continue
            tail.append(orjson.dumps(data))
        tail.append(DONE)
        return tail


def _fill_required(response: dict[str, Any]) -> None:
    """Fields the Chat Completions response schema requires that an upstream left out (many
    OpenAI-compatible servers omit `refusal` and `logprobs`): typed clients expect them."""
    for choice in response.get("choices") or ():
        if isinstance(choice, dict):
            choice.setdefault("logprobs", None)
            message = choice.get("message")
            if isinstance(message, dict):
                message.setdefault("content", None)
                message.setdefault("refusal", None)
