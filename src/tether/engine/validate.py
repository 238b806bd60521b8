"""The one validator every message sequence passes before an upstream call and a commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tether.errors import TetherError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def _fail(message: str, index: int) -> TetherError:
    return TetherError(422, "invalid_message_sequence", message, param=f"messages[{index}]")


def validate_sequence(
    messages: Sequence[Mapping[str, Any]], pending: frozenset[str] = frozenset()
) -> frozenset[str]:
    """Tool pairing and role order: every `tool` message answers a call of the assistant
    message just before its group, and every call is answered before anything else is said.

    Returns the calls still unanswered at the end, so a sequence can be checked in pieces:
    `validate_sequence(more, validate_sequence(view))` equals checking `view + more`."""
    pending_ids: set[str] = set(pending)
    pending_from = -1
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            raise _fail(f"unknown role {role!r}", i)
        if role == "tool":
            call_id = m.get("tool_call_id")
            if call_id not in pending_ids:
                raise _fail(
                    f"tool result for {call_id!r} does not answer a pending tool call of the "
                    "preceding assistant message",
                    i,
                )
            pending_ids.discard(call_id)
            continue
        if pending_ids:
            raise _fail(
                f"assistant message {pending_from} made tool calls {sorted(pending_ids)} that were "
                "never answered: send a `tool` message for each before continuing",
                i,
            )
        if role == "assistant":
            calls = m.get("tool_calls") or []
            pending_ids = {str(c.get("id")) for c in calls if isinstance(c, Mapping)}
            pending_from = i
    # A sequence may end with unanswered calls: the assistant just asked for tools.
    return frozenset(pending_ids)


def pending_after(messages: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """What `validate_sequence` returns for an already valid sequence, reading only its end:
    the last assistant message's tool calls that no later tool result answers."""
    answered: set[str] = set()
    for m in reversed(messages):
        role = m.get("role")
        if role == "tool":
            answered.add(str(m.get("tool_call_id")))
            continue
        if role in ("system", "developer"):
            continue
        calls = m.get("tool_calls") or [] if role == "assistant" else []
        ids = {str(c.get("id")) for c in calls if isinstance(c, Mapping)}
        return frozenset(ids - answered)
    return frozenset()
