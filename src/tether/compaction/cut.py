"""Where to cut, and the cheap stage before summarising.

A *group* starts at a non-tool message and holds the `tool` results that follow it, so an
assistant message with `tool_calls` and all its results are never separated, and a cut (which
only falls on a group boundary) never leaves a tail that starts with a tool result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from tether.compaction.tokens import count_message
from tether.model import Message
from tether.upstream.wire import chat_message

STUB_OVER_CHARS = 200
ARG_KEEP_CHARS = 200


def group_starts(messages: Sequence[Message]) -> list[int]:
    """Indexes where a group begins: every non-tool message (and index 0)."""
    return [i for i, m in enumerate(messages) if i == 0 or m.role != "tool"]


def choose_tail_start(
    messages: Sequence[Message],
    budget: int,
    min_messages: int = 8,
    soft_ceiling: float = 1.5,
) -> int:
    """Index of the first message kept verbatim. Everything before it may be summarised.

    Whole groups are taken from the end while they fit `budget` tokens, or while fewer than
    `min_messages` are kept and the tail stays under `soft_ceiling × budget`. The tail always
    holds the last user message and the last assistant reply, and opens with a user message
    when one lies between its start and those two.
    """
    if not messages:
        return 0
    starts = group_starts(messages)
    ends = [*starts[1:], len(messages)]
    tail_start = len(messages)
    used = 0
    for start, end in zip(reversed(starts), reversed(ends), strict=True):
        size = sum(m.tokens for m in messages[start:end])
        kept = len(messages) - tail_start
        if kept:  # the last group is always kept
            fits = used + size <= budget
            short = kept < min_messages and used + size <= soft_ceiling * budget
            if not (fits or short):
                break
        tail_start = start
        used += size
    last_of = {
        role: max((i for i, m in enumerate(messages) if m.role == role), default=None)
        for role in ("user", "assistant")
    }
    for last in last_of.values():
        if last is not None and last < tail_start:
            tail_start = max(s for s in starts if s <= last)
    # Prefer a tail that opens with a user message (some chat templates insist on it), as long
    # as the last assistant reply stays in it.
    if messages[tail_start].role != "user":
        bound = min((i for i in last_of.values() if i is not None), default=tail_start)
        tail_start = next(
            (i for i in range(tail_start, bound + 1) if messages[i].role == "user"), tail_start
        )
    return tail_start


def _as_text(content: Any) -> str:
    return content if isinstance(content, str) else orjson.dumps(content).decode()


def _stub_text(message: Message, call_names: dict[str, str]) -> str:
    text = _as_text(message.content)
    name = call_names.get(message.tool_call_id or "", "tool")
    first = " ".join(text[:80].split())
    return f"[{name} output, {len(text):,} chars, elided by compaction] {first}…"


def _shorten_arguments(arguments: str) -> str:
    """Shorten long string values inside the JSON arguments, keeping it valid JSON. Arguments
    with nothing to shorten come back unchanged; shortened values stay under the limit, so
    pruning twice changes nothing."""
    keep = ARG_KEEP_CHARS - 24  # room for the "… [12,345 chars]" marker
    changed = False

    def shorten(v: Any) -> Any:
        nonlocal changed
        if isinstance(v, str) and len(v) > ARG_KEEP_CHARS:
            changed = True
            return v[:keep] + f"… [{len(v):,} chars]"
        if isinstance(v, list):
            return [shorten(x) for x in v]
        if isinstance(v, dict):
            return {k: shorten(x) for k, x in v.items()}
        return v

    try:
        value = json.loads(arguments)
    except ValueError:
        if len(arguments) <= ARG_KEEP_CHARS:
            return arguments
        return json.dumps({"truncated_arguments": arguments[:keep] + "…"})
    shortened = shorten(value)
    return json.dumps(shortened) if changed else arguments


def prune(messages: Sequence[Message], through_seq: int) -> list[Message]:
    """The cheap stage: tool outputs over STUB_OVER_CHARS with seq <= through_seq become one-line
    stubs and long tool-call arguments are shortened inside their JSON. Deterministic, so the
    view derived from a checkpoint is the same every time."""
    call_names: dict[str, str] = {}
    out: list[Message] = []
    for m in messages:
        for call in m.tool_calls or ():
            call_names[str(call.get("id"))] = str((call.get("function") or {}).get("name"))
        if m.seq > through_seq:
            out.append(m)
            continue
        if m.role == "tool":
            if len(_as_text(m.content)) > STUB_OVER_CHARS:
                m = replace(m, content=_stub_text(m, call_names))
                m = replace(m, tokens=count_message(chat_message(m)))
        elif m.tool_calls:
            calls = [
                {
                    **c,
                    "function": {
                        **c["function"],
                        "arguments": _shorten_arguments(str(c["function"].get("arguments", ""))),
                    },
                }
                if isinstance(c.get("function"), dict)
                else c
                for c in m.tool_calls
            ]
            if calls != m.tool_calls:
                m = replace(m, tool_calls=calls)
                m = replace(m, tokens=count_message(chat_message(m)))
        out.append(m)
    return out
