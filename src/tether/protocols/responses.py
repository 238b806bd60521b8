"""The Responses API: a turn's events as the `response` object of `POST /v1/responses`, or as
its SSE stream — `response.created`, `response.in_progress`, then per output item
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta` …
(or `response.function_call_arguments.delta` …), their `.done` events, and
`response.completed` (`response.incomplete`, `response.failed`), each with the next
`sequence_number`. The same turn events feed Chat Completions (protocols/chat_completions.py):
two doors into one store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from tether.engine.events import Failed, Finished, Started, TextDelta, ToolCallDelta, TurnEvent
from tether.engine.events import Usage as UsageEvent
from tether.engine.request import TurnInfo
from tether.protocols.common import tether_object, turn_headers
from tether.protocols.responses_items import item_id, output_items

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id(turn_id: str) -> str:
    return "resp_" + turn_id.removeprefix("turn_")


def turn_of(response: str) -> str:
    return "turn_" + response.removeprefix("resp_")


def usage_of(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    given = usage.get("prompt_tokens_details") or {}
    made = usage.get("completion_tokens_details") or {}
    prompt, completion = (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(given.get("cached_tokens") or 0)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(made.get("reasoning_tokens") or 0)},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as the response shows it: every field, unset ones null."""
    shown = {k: tool.get(k) for k in ("type", "name", "description", "parameters", "strict")}
    return {**tool, **shown}


def echoed(request: dict[str, Any]) -> dict[str, Any]:
    """What a response repeats of its request, every field the spec requires present."""
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    return {
        "instructions": request.get("instructions"),
        "tools": [_tool(t) for t in request.get("tools") or () if isinstance(t, dict)],
        "tool_choice": request.get("tool_choice") or "auto",
        "truncation": request.get("truncation") or "disabled",
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "text": {"format": {"type": "text"}, **(text or {})},
        "top_p": request.get("top_p", 1.0) if request.get("top_p") is not None else 1.0,
        "temperature": request.get("temperature")
        if request.get("temperature") is not None
        else 1.0,
        "presence_penalty": request.get("presence_penalty") or 0.0,
        "frequency_penalty": request.get("frequency_penalty") or 0.0,
        "top_logprobs": request.get("top_logprobs") or 0,
        "reasoning": None,
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "store": request.get("store", True) is not False,
        "background": False,
        "service_tier": "default",
        "metadata": request.get("metadata") or {},
        "safety_identifier": request.get("safety_identifier"),
        "prompt_cache_key": request.get("prompt_cache_key"),
    }


def response_object(
    *,
    rid: str,
    created_at: float,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    request: dict[str, Any],
    previous: str | None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
    info: TurnInfo | None = None,
    completed_at: float | None = None,
    nowhere: bool = False,
) -> dict[str, Any]:
    """`nowhere`: an unstored response (`store: false`) outside any conversation: it names
    none (the id its turn was given is never written)."""
    body: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": int(created_at),
        "completed_at": int(completed_at or time.time())
        if status in ("completed", "incomplete")
        else None,
        "status": status,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model,
        "previous_response_id": previous,
        "output": output,
        "error": error,
        "usage": usage,
        **echoed(request),
    }
    if nowhere:
        body["conversation"] = None
    elif info is not None:
        body["conversation"] = {"id": info.conversation_id}
        body["tether"] = tether_object(info)
    return body


class Responses:
    """One turn's rendering (a `Projection`) for `POST /v1/responses`."""

    def __init__(
        self,
        *,
        stream: bool,
        request: dict[str, Any],
        previous: str | None,
        nowhere: bool = False,
        finished: Callable[[TurnInfo], None] | None = None,
    ) -> None:
        self.stream = stream
        self.request = request
        self.previous = previous
        self.nowhere = nowhere  # store: false, in no conversation
        self.finished = finished  # told where the turn leaves its conversation
        self.model = str(request.get("model") or "")
        self.created = time.time()
        self.seq = -1
        self.rid = ""
        self.turn_id = ""
        self.usage: dict[str, Any] | None = None
        self.items: list[dict[str, Any]] = []  # the output so far (streaming)
        self.open: dict[str, Any] | None = None  # the item receiving deltas
        self.calls: dict[int, dict[str, Any]] = {}  # a streamed tool call's item, by index

    def headers(self, info: TurnInfo) -> dict[str, str]:
        return {"X-Tether-Turn": info.turn_id} if self.nowhere else turn_headers(info)

    # -- events --------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        self.seq += 1
        return orjson.dumps({"type": kind, "sequence_number": self.seq, **fields})

    def _object(self, status: str, info: TurnInfo | None = None, **kw: Any) -> dict[str, Any]:
        return response_object(
            rid=self.rid,
            created_at=self.created,
            model=self.model,
            status=status,
            output=self.items,
            request=self.request,
            previous=self.previous,
            info=info,
            nowhere=self.nowhere,
            **kw,
        )

    def render(self, event: TurnEvent) -> list[bytes]:
        if isinstance(event, Started):
            self.turn_id, self.rid = event.info.turn_id, response_id(event.info.turn_id)
            if not self.stream:
                return []
            shown = self._object("in_progress", event.info)
            return [
                self._event("response.created", response=shown),
                self._event("response.in_progress", response=shown),
            ]
        if isinstance(event, UsageEvent):
            self.usage = usage_of(event.usage)
            return []
        if not self.stream:
            return [self._body(event)] if isinstance(event, Finished) else []
        if isinstance(event, TextDelta):
            return self._text(event.text) if event.text else []
        if isinstance(event, ToolCallDelta):
            return [out for call in event.calls for out in self._call(call)]
        if isinstance(event, Finished):
            return self._finish(event)
        if isinstance(event, Failed):
            return self._failed(event)
        return []  # compaction and server tool progress: not events of this API

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self.open is None or self.open["type"] != "message":
            out += self._close()
            index = len(self.items)
            item: dict[str, Any] = {
                "type": "message",
                "id": item_id("msg", self.turn_id, index),
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self.items.append(item)
            self.open = item
            out.append(self._event("response.output_item.added", output_index=index, item=item))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(self._event("response.content_part.added", **where, part=part))
            item["content"].append(dict(part))
        opened: dict[str, Any] = self.open
        opened["content"][0]["text"] += text
        where = {"item_id": opened["id"], "output_index": len(self.items) - 1, "content_index": 0}
        out.append(self._event("response.output_text.delta", **where, delta=text, logprobs=[]))
        return out

    def _call(self, delta: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = int(delta.get("index") or 0)
        fn = delta.get("function") or {}
        item = self.calls.get(index)
        if item is None:
            out += self._close()
            item = {
                "type": "function_call",
                "id": item_id("fc", self.turn_id, len(self.items)),
                "call_id": delta.get("id") or "",
                "name": fn.get("name") or "",
                "arguments": "",
                "status": "in_progress",
            }
            self.calls[index] = item
            self.items.append(item)
            self.open = item
            out.append(
                self._event(
                    "response.output_item.added", output_index=len(self.items) - 1, item=dict(item)
                )
            )
        piece = fn.get("arguments") or ""
        if piece:
            item["arguments"] += piece
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self.items.index(item),
                    delta=piece,
                )
            )
        return out

    def _close(self, status: str = "completed") -> list[bytes]:
        item, self.open = self.open, None
        if item is None:
            return []
        index = self.items.index(item)
        item["status"] = status
        out = []
        if item["type"] == "message":
            part = item["content"][0]
            out.append(
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                )
            )
            out.append(
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        else:
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _ending(self, event: Finished) -> tuple[str, str | None]:
        reason = INCOMPLETE.get(event.finish_reason)
        return ("incomplete", reason) if reason else ("completed", None)

    def _finish(self, event: Finished) -> list[bytes]:
        if self.finished is not None:
            self.finished(event.info)
        status, reason = self._ending(event)
        out = []
        while self.open is not None or any(i["status"] == "in_progress" for i in self.items):
            if self.open is None:
                self.open = next(i for i in self.items if i["status"] == "in_progress")
            out += self._close("incomplete" if reason else "completed")
        self.model = event.model or self.model
        final = self._object(status, event.info, usage=self.usage, incomplete=reason)
        return [*out, self._event(f"response.{status}", response=final)]

    def _failed(self, event: Failed) -> list[bytes]:
        error = {"code": event.error.code, "message": event.error.message}
        return [self._event("response.failed", response=self._object("failed", error=error))]

    def _body(self, event: Finished) -> bytes:
        if self.finished is not None:
            self.finished(event.info)
        status, reason = self._ending(event)
        ended = "incomplete" if reason else "completed"
        self.items = output_items([event.reply], self.turn_id, ended)
        usage = usage_of((event.response or {}).get("usage")) or self.usage
        self.model = event.model or self.model
        return orjson.dumps(self._object(status, event.info, usage=usage, incomplete=reason))
