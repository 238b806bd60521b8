"""What a scripted reply is, apart from any transport: the item a request takes from the script
queue, the reply it makes (or the default echo), its usage as a real server counts it, and its
wire shapes (the JSON completion, the streamed frames).

Shared by the scripted upstream process (`tether.testing.upstream`) and the in-process
`tether.testing.fake.FakeUpstream`, so both answer a script alike."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from tether.compaction.tokens import count_message, count_text

SUMMARISER_MARKER = "[[TETHER-SUMMARISER]]"
DONE = b"data: [DONE]\n\n"


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens as a real server would count them (o200k_base, chat framing). Counts are
    cached per message, so resent histories cost little: a benchmark's upstream must be fast."""
    return 3 + sum(_count_cached(orjson.dumps(m, option=orjson.OPT_SORT_KEYS)) for m in messages)


@functools.lru_cache(maxsize=65536)
def _count_cached(message_json: bytes) -> int:
    return count_message(orjson.loads(message_json))


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m)
    return ""


def default_reply(messages: list[dict[str, Any]]) -> str:
    systems = [m for m in messages if m.get("role") == "system"]
    if any(SUMMARISER_MARKER in message_text(m) for m in systems):
        return f"SUMMARY of {len(messages) - len(systems)} messages"
    return "echo: " + last_user_text(messages)


def pop_item(queue: list[dict[str, Any]], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The first queued item whose ``match`` is in the last user message (or that has none),
    taken off the queue; ``{}`` (the default reply) if none fits."""
    if not queue:
        return {}
    last_user: str | None = None
    for i, item in enumerate(queue):
        match = item.get("match")
        if match is None:
            return queue.pop(i)
        if last_user is None:
            last_user = last_user_text(messages)
        if str(match) in last_user:
            return queue.pop(i)
    return {}


def context_length_error(
    window: int | None, body: dict[str, Any], prompt_tokens: int
) -> dict[str, Any] | None:
    """The 400 body a server with this context window answers a prompt too long for it, or
    None if it fits (or there is no window)."""
    if window is None:
        return None
    wanted = prompt_tokens + (body.get("max_tokens") or body.get("max_completion_tokens") or 0)
    if wanted <= window:
        return None
    message = (
        f"This model's maximum context length is {window} tokens. "
        f"However, your messages resulted in {wanted} tokens."
    )
    err = {
        "message": message,
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    return {"error": err}


def scripted_error(item: dict[str, Any]) -> dict[str, Any]:
    """The error body of an item with a ``status``."""
    default_err = {"message": "scripted error", "type": "server_error", "code": "scripted"}
    return {"error": item.get("error") or default_err}


@dataclass(frozen=True, slots=True)
class Reply:
    """What an item (or the default) answers: the message's parts, the finish and the usage."""

    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    usage: dict[str, Any]


def scripted_reply(
    item: dict[str, Any], messages: list[dict[str, Any]], prompt_tokens: int
) -> Reply:
    tool_calls: list[dict[str, Any]] | None = item.get("tool_calls") or None
    if "content" in item:
        content: str | None = item["content"]
    else:
        content = None if tool_calls else default_reply(messages)
    completion_tokens = max(1, count_text(content or ""))
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if item.get("usage"):
        usage.update(item["usage"])
        if "total_tokens" not in item["usage"]:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    finish_reason = item.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
    return Reply(content, tool_calls, finish_reason, usage)


def completion(
    reply: Reply, meta: dict[str, Any], message_extra: dict[str, Any] | None
) -> dict[str, Any]:
    """The JSON (non-streamed) answer; `meta` holds its ``id``, ``created`` and ``model``."""
    msg: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        msg["tool_calls"] = reply.tool_calls
    msg.update(message_extra or {})
    choice = {"index": 0, "message": msg, "finish_reason": reply.finish_reason, "logprobs": None}
    return {"object": "chat.completion", **meta, "choices": [choice], "usage": reply.usage}


def stream_frames(
    reply: Reply,
    meta: dict[str, Any],
    body: dict[str, Any],
    item: dict[str, Any],
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(kind, frame)`` for the streamed answer (kind is role, content, tool, final,
    usage or done); the usage frame only if the body asked for it and the item allows it."""
    chunk_meta = {"id": meta["id"], "object": "chat.completion.chunk", **meta}
    head = b"data: " + orjson.dumps(chunk_meta)[:-1] + b',"choices":[{"index":0,"delta":'
    usage_frame = None
    wants_usage = (body.get("stream_options") or {}).get("include_usage")
    if wants_usage and not item.get("no_usage"):
        usage_chunk: dict[str, Any] = {**chunk_meta, "choices": [], "usage": reply.usage}
        usage_frame = b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
    return _frames(
        head,
        reply.content,
        reply.tool_calls,
        int(item.get("chunk_size") or 4),
        reply.finish_reason,
        usage_frame,
    )


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _frames(
    head: bytes,
    content: str | None,
    tool_calls: list[dict[str, Any]] | None,
    chunk_size: int,
    finish_reason: str,
    usage_frame: bytes | None,
) -> Iterator[tuple[str, bytes]]:
    tail = b',"finish_reason":null,"logprobs":null}]}\n\n'
    yield "role", head + b'{"role":"assistant","content":""}' + tail
    for piece in _pieces(content or "", chunk_size):
        yield "content", head + orjson.dumps({"content": piece}) + tail
    for idx, tc in enumerate(tool_calls or ()):
        fn = tc.get("function") or {}
        first = {
            "index": idx,
            "id": tc.get("id") or f"call_{idx}",
            "type": tc.get("type", "function"),
            "function": {"name": fn.get("name", ""), "arguments": ""},
        }
        yield "tool", head + orjson.dumps({"tool_calls": [first]}) + tail
        args = str(fn.get("arguments") or "")
        half = (len(args) + 1) // 2
        for part in (args[:half], args[half:]):
            if part:
                delta = {"tool_calls": [{"index": idx, "function": {"arguments": part}}]}
                yield "tool", head + orjson.dumps(delta) + tail
    final = orjson.dumps({"finish_reason": finish_reason, "logprobs": None})[1:]
    yield "final", head + b"{}," + final + b"]}\n\n"
    if usage_frame is not None:
        yield "usage", usage_frame
    yield "done", DONE
