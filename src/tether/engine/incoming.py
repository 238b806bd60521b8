"""A request's messages as the engine reads them: parsed one by one, when first needed.

A full-history client resends the whole transcript on every turn (200 messages for a
200-message conversation), and only what it adds is stored or sent to the model. When the
transcript hash (engine/fingerprint.py, computed straight from the request's JSON) shows the
request extends the stored conversation, only the new messages are parsed into `Message`s and
validated; a request that matches nothing is parsed whole, and any invalid message is the same
400 it always was. Validating the 200 resent messages with pydantic cost 0.32 ms a turn, and
building their records 0.15 ms (measured, bench/README.md), against ~0.75 ms for a whole turn
sent the bridge way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import compress
from operator import itemgetter
from typing import Any, overload

from tether.engine.fingerprint import INSTRUCTION_ROLES
from tether.model import Message

_ROLE = itemgetter("role")

Parse = Callable[[Any, int], Message]  # (the raw message, its index) → Message, or a 400


class Incoming(Sequence[Message]):
    """The request's messages, parsed on first access. `roles` holds each raw message's role
    (None where it is not a string): enough to tell instructions from history without parsing."""

    def __init__(self, raw: list[Any], parse: Parse) -> None:
        self.raw = raw
        self._parse = parse
        self._parsed: list[Message | None] = [None] * len(raw)
        self.roles = _roles(raw)
        # where the instructions (system, developer) and the history messages are
        instruction = list(map(INSTRUCTION_ROLES.__contains__, self.roles))
        self.instructions_at: list[int] = list(compress(range(len(raw)), instruction))
        self.history_at: list[int] = (
            list(range(len(raw)))
            if not self.instructions_at
            else [i for i, flag in enumerate(instruction) if not flag]
        )

    def __len__(self) -> int:
        return len(self.raw)

    @overload
    def __getitem__(self, index: int) -> Message: ...
    @overload
    def __getitem__(self, index: slice) -> list[Message]: ...
    def __getitem__(self, index: int | slice) -> Message | list[Message]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.raw)))]
        message = self._parsed[index]
        if message is None:
            message = self._parsed[index] = self._parse(self.raw[index], index % len(self.raw))
        return message

    def __iter__(self) -> Iterator[Message]:
        return (self[i] for i in range(len(self.raw)))


def _roles(raw: list[Any]) -> list[str | None]:
    """Each raw message's role, None where it is not a string (in C where all are objects with
    a string role: 7 µs for 200 messages against 24 in a comprehension)."""
    try:
        roles: list[Any] = list(map(_ROLE, raw))
        if set(map(type, roles)) <= {str}:
            return roles
    except (KeyError, TypeError, IndexError):
        pass
    return [
        m.get("role") if isinstance(m, dict) and isinstance(m.get("role"), str) else None
        for m in raw
    ]


def roles_of(messages: Sequence[Message]) -> list[str | None]:
    if isinstance(messages, Incoming):
        return messages.roles
    return [m.role for m in messages]


def instruction_indexes(messages: Sequence[Message]) -> list[int]:
    if isinstance(messages, Incoming):
        return messages.instructions_at
    return [i for i, m in enumerate(messages) if m.role in INSTRUCTION_ROLES]


def history_indexes(messages: Sequence[Message]) -> list[int]:
    """Positions of the history messages (not instructions) in a request."""
    if isinstance(messages, Incoming):
        return messages.history_at
    return [i for i, m in enumerate(messages) if m.role not in INSTRUCTION_ROLES]
