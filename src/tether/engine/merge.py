"""Merging a request's messages into a stored conversation: the one rule (docs/contract.md).

- system/developer messages are instructions, not history: the request's become the
  conversation's from this turn on (a change is recorded as a `system` message in the
  transcript) and are left out of the comparison;
- `replay` (full history): the request's other messages must extend the stored transcript,
  compared by content; only the new suffix is appended. A divergence forks;
- `append`: every non-system message in the request is new;
- `auto` (default): `replay` if the request holds an assistant message, else `append`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from tether.errors import TetherError
from tether.store.base import Message

INSTRUCTION_ROLES = frozenset({"system", "developer"})
HistoryMode = Literal["auto", "append", "replay"]


@dataclass(frozen=True, slots=True)
class MergePlan:
    system_prompt: str | None  # in effect from this turn on
    system_changed: bool
    history: list[Message]  # stored non-system messages the model sees before `new`
    new: list[Message]  # to append, in order (a `system` record first if it changed)
    fork_seq: int | None  # not None: fork the conversation, sharing messages through this seq


def text_of(content: Any) -> str:
    """Text of a content value: a string, or the text parts of a parts list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)


def _content_key(content: Any) -> Any:
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" for p in content
    ):
        return text_of(content)
    if isinstance(content, list):
        return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return content or ""


def _calls_key(calls: list[dict[str, Any]] | None) -> tuple[tuple[str, str, str], ...]:
    out = []
    for c in calls or ():
        fn = c.get("function") or {}
        out.append((str(c.get("id")), str(fn.get("name")), str(fn.get("arguments"))))
    return tuple(out)


def same_message(a: Message, b: Message) -> bool:
    """Content equality as a resending client preserves it (ignores names and extras)."""
    return (
        a.role == b.role
        and _content_key(a.content) == _content_key(b.content)
        and _calls_key(a.tool_calls) == _calls_key(b.tool_calls)
        and (a.tool_call_id or None) == (b.tool_call_id or None)
    )


def _system_in_effect(stored: Sequence[Message], through_seq: int) -> str | None:
    prompt = None
    for m in stored:
        if m.seq > through_seq:
            break
        if m.role == "system":
            prompt = text_of(m.content)
    return prompt


def merge(
    stored: Sequence[Message],
    stored_system: str | None,
    request: Sequence[Message],
    mode: HistoryMode = "auto",
) -> MergePlan:
    instructions = [m for m in request if m.role in INSTRUCTION_ROLES]
    incoming = [m for m in request if m.role not in INSTRUCTION_ROLES]
    if not incoming:
        raise TetherError(
            400,
            "no_messages",
            "the request holds no user, assistant or tool message",
            param="messages",
        )
    history = [m for m in stored if m.role not in INSTRUCTION_ROLES]
    if mode == "auto":
        mode = "replay" if any(m.role == "assistant" for m in incoming) else "append"
    fork_seq: int | None = None
    new = incoming
    if mode == "replay":
        k = 0
        limit = min(len(history), len(incoming))
        while k < limit and same_message(history[k], incoming[k]):
            k += 1
        new = incoming[k:]
        if k < len(history):
            fork_seq = history[k - 1].seq if k else 0
            history = history[:k]
        if not new:
            raise TetherError(
                400,
                "no_new_messages",
                "the request's messages add nothing to the stored conversation",
                param="messages",
            )
    base_system = stored_system if fork_seq is None else _system_in_effect(stored, fork_seq)
    system = "\n\n".join(text_of(m.content) for m in instructions) if instructions else base_system
    changed = system != base_system
    record = [Message(role="system", content=system)] if changed else []
    return MergePlan(system, changed, history, record + new, fork_seq)
