"""The model's view: system prompt (+ the latest summary and ledger) + messages after the
watermark (old tool outputs stubbed) + the request's new messages. Derived, never stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.compaction.cut import prune
from tether.compaction.summary import frame
from tether.compaction.tokens import MESSAGE_OVERHEAD, REPLY_PRIMING, count_text
from tether.model import Checkpoint, Message


def system_block(system_prompt: str | None, checkpoint: Checkpoint | None) -> str | None:
    if checkpoint is None or (checkpoint.summary is None and not checkpoint.ledger):
        return system_prompt
    block = frame(checkpoint.summary, checkpoint.ledger)
    return f"{system_prompt}\n\n{block}" if system_prompt else block


def tail_messages(stored: Sequence[Message], checkpoint: Checkpoint | None) -> list[Message]:
    """Stored conversation messages the model still sees verbatim (or stubbed)."""
    covers = checkpoint.covers_through_seq if checkpoint else 0
    kept = [
        m
        for m in stored
        if m.seq > covers and m.role not in ("system", "developer") and not m.removed
    ]
    if checkpoint and checkpoint.prune_through_seq > covers:
        kept = prune(kept, checkpoint.prune_through_seq)
    return kept


def render(system: str | None, messages: Sequence[Message]) -> list[dict[str, Any]]:
    view: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    view.extend(upstream_message(m) for m in messages if m.role not in ("system", "developer"))
    return view


def upstream_message(m: Message) -> dict[str, Any]:
    """A stored message as a Chat Completions *request* carries it: the fields its role has in
    the request schema, nothing else. What an upstream put on a reply (`annotations`,
    `reasoning_content`…) and a client's extra fields stay stored and readable, but are not sent
    back: strict upstreams refuse unknown fields."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
        return out
    if m.name is not None:
        out["name"] = m.name
    if m.role != "assistant":
        return out
    if m.tool_calls:
        out["tool_calls"] = [_upstream_call(c) for c in m.tool_calls]
    extra = m.extra
    if extra:
        for field in _ASSISTANT_EXTRAS:
            if extra.get(field) is not None:
                out[field] = extra[field]
    return out


_ASSISTANT_EXTRAS = ("refusal", "audio", "function_call")  # the rest of its request fields


def _upstream_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {
        "id": call.get("id"),
        "type": call.get("type") or "function",
        "function": {"name": fn.get("name"), "arguments": fn.get("arguments", "")},
    }


def estimate(system: str | None, messages: Sequence[Message]) -> int:
    """Estimated prompt tokens of a view (messages carry their own counts)."""
    total = REPLY_PRIMING + sum(m.tokens for m in messages if m.role not in ("system", "developer"))
    if system:
        total += MESSAGE_OVERHEAD + count_text(system)
    return total


def inline_system(view: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For chat templates without a system role (Gemma's drops it): the system message's text
    leads the first user message instead, so instructions and summaries still reach the model."""
    if not view or view[0].get("role") != "system":
        return view
    system, rest = view[0], view[1:]
    block = f"{system['content']}\n\n"
    if rest and rest[0].get("role") == "user" and isinstance(rest[0].get("content"), str):
        return [{**rest[0], "content": block + rest[0]["content"]}, *rest[1:]]
    return [{"role": "user", "content": block.strip()}, *rest]
