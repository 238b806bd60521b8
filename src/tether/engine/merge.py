"""Merging a request's messages into a stored conversation: the one rule (docs/contract.md).

- system/developer messages are instructions, not history: the request's become the
  conversation's from this turn on (a change is recorded as a `system` message in the
  transcript) and are left out of the comparison;
- `replay` (full history): the request's other messages must extend the stored transcript,
  compared by meaning (engine/fingerprint.py: re-encoded tool arguments, a string vs one text
  part, null vs absent are the same); only the new suffix is appended. A history trimmed at its
  start (the oldest messages dropped) still extends it. A divergence forks;
- `append`: every non-system message in the request is new;
- `auto` (default): `replay` if the request holds an assistant message, else `append`.

Tether's own tool results for calls a client left unanswered are stored but never resent by
the client, so the comparison steps over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tether.engine.fingerprint import (
    INSTRUCTION_ROLES,
    is_history,
    prefix_hashes,
    raw_prefix_hashes,
    same_message,
    text_of,
)
from tether.engine.incoming import Incoming, history_indexes, instruction_indexes, roles_of
from tether.errors import TetherError
from tether.model import Message

__all__ = [
    "INSTRUCTION_ROLES",
    "HistoryMode",
    "MergePlan",
    "history_hashes",
    "history_roles",
    "incoming_of",
    "merge",
    "mode_of",
    "text_of",
]
_TRIM_CANDIDATES = 8  # where a trimmed history may pick up the transcript: bounded work

HistoryMode = Literal["auto", "append", "replay"]


@dataclass(frozen=True, slots=True)
class MergePlan:
    system_prompt: str | None  # in effect from this turn on
    system_changed: bool
    history: list[Message]  # stored non-system messages the model sees before `new`
    new: list[Message]  # to append, in order (a `system` record first if it changed)
    fork_seq: int | None  # not None: fork the conversation, sharing messages through this seq
    matched: int = 0  # the request's history messages found in the stored transcript
    closed: tuple[str, ...] = ()  # unanswered tool calls closed by Tether (engine/dangling.py)


def mode_of(request: Sequence[Message], mode: HistoryMode) -> HistoryMode:
    if mode == "auto":
        return "replay" if "assistant" in roles_of(request) else "append"
    return mode


def incoming_of(request: Sequence[Message]) -> list[Message]:
    """The request's history messages (all of them parsed)."""
    return [request[i] for i in history_indexes(request)]


def history_roles(request: Sequence[Message]) -> list[str | None]:
    roles = roles_of(request)
    return [roles[i] for i in history_indexes(request)]


def history_hashes(request: Sequence[Message]) -> list[bytes]:
    """The prefix hashes of the request's history (engine/fingerprint.py): straight from its
    JSON where it came as JSON and every message is valid, else from the parsed messages (which
    reports an invalid one)."""
    if isinstance(request, Incoming):
        hashes = raw_prefix_hashes(request.raw, request.roles)
        if hashes is not None:
            return hashes
    return prefix_hashes(incoming_of(request))


def _system_in_effect(stored: Sequence[Message], through_seq: int) -> str | None:
    prompt = None
    for m in stored:
        if m.seq > through_seq:
            break
        if m.role == "system":
            prompt = text_of(m.content)
    return prompt


def _walk(history: Sequence[Message], start: int, incoming: Sequence[Message]) -> tuple[int, int]:
    """Compare history[start:] with incoming from its start, stepping over Tether's own
    messages: (history position reached, incoming messages matched)."""
    i, j = start, 0
    while i < len(history):
        if not is_history(history[i]):
            late = j < len(incoming) and incoming[j].role == "tool"
            if late and incoming[j].tool_call_id == history[i].tool_call_id:
                j += 1  # the client's own (late) result for a call Tether closed
            i += 1
            continue
        if j == len(incoming) or not same_message(history[i], incoming[j]):
            break
        i, j = i + 1, j + 1
    return i, j


def _trimmed(history: Sequence[Message], incoming: Sequence[Message]) -> int | None:
    """A history trimmed at its start: the incoming messages matched when they pick up the
    stored transcript somewhere after its start and run to its end; None if they don't."""
    if not incoming:
        return None
    tried = 0
    for start in range(1, len(history)):
        if is_history(history[start]) and same_message(history[start], incoming[0]):
            i, j = _walk(history, start, incoming)
            if i == len(history):
                return j
            tried += 1
            if tried == _TRIM_CANDIDATES:
                break
    return None


def merge(
    stored: Sequence[Message],
    stored_system: str | None,
    request: Sequence[Message],
    mode: HistoryMode = "auto",
    extends: int | None = None,
) -> MergePlan:
    """The plan for `request` on a conversation holding `stored`. `extends`: the number of the
    request's history messages already known (by transcript hash) to be the stored transcript,
    so `stored` need only hold what the model sees."""
    indexes = history_indexes(request)
    if extends is None:
        list(request)  # a request compared in full is parsed (validated) in order
    instructions = [request[i] for i in instruction_indexes(request)]
    if not indexes:
        raise TetherError(
            400,
            "no_messages",
            "the request holds no user, assistant or tool message",
            param="messages",
        )
    history = [m for m in stored if m.role not in INSTRUCTION_ROLES]
    fork_seq: int | None = None
    matched = 0
    if mode_of(request, mode) != "replay":
        new = [request[i] for i in indexes]
    else:
        if extends is not None:  # only what the request adds is read
            matched = extends
        else:
            incoming = [request[i] for i in indexes]
            i, matched = _walk(history, 0, incoming)
            if i < len(history):
                trimmed = _trimmed(history, incoming) if matched == 0 else None
                if trimmed is not None:
                    matched = trimmed
                else:
                    fork_seq = history[i - 1].seq if i else 0
                    history = history[:i]
        new = [request[i] for i in indexes[matched:]]
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
    return MergePlan(system, changed, history, record + new, fork_seq, matched)
