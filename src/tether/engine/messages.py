"""Making the turn's messages: token counts, a conversation's title, the model's reply."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tether.compaction.tokens import count_message
from tether.engine.merge import text_of
from tether.model import Message
from tether.upstream.wire import chat_message


def with_tokens(m: Message) -> Message:
    return replace(m, tokens=count_message(chat_message(m)))


def title_of(messages: list[Message]) -> str | None:
    for m in messages:
        if m.role == "user":
            text = " ".join(text_of(m.content).split())
            return text[:80] or None
    return None


def assistant_message(reply: dict[str, Any], tokens: int | None) -> Message:
    """The upstream's reply message (Chat Completions shape) as a stored message."""
    known = {"role", "content", "tool_calls", "tool_call_id", "name"}
    extra = {k: v for k, v in reply.items() if k not in known and v is not None}
    msg = Message(
        role="assistant",
        content=reply.get("content"),
        tool_calls=reply.get("tool_calls") or None,
        name=reply.get("name"),
        extra=extra or None,
    )
    return with_tokens(msg) if tokens is None else replace(msg, tokens=tokens)


def estimated_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "estimated": True,  # Tether's offline counts (docs/tokens.md), not the upstream's
    }
