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
from typing import Any, overload

from tether.store.base import Message

Parse = Callable[[Any, int], Message]  # (the raw message, its index) → Message, or a 400


class Incoming(Sequence[Message]):
    """The request's messages, parsed on first access. `roles` holds each raw message's role
    (None where it is not a string): enough to tell instructions from history without parsing."""

    def __init__(self, raw: list[Any], parse: Parse) -> None:
        self.raw = raw
        self._parse = parse
        self._parsed: list[Message | None] = [None] * len(raw)
        self.roles: list[str | None] = [
            m.get("role") if isinstance(m, dict) and isinstance(m.get("role"), str) else None
            for m in raw
        ]

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


def roles_of(messages: Sequence[Message]) -> list[str | None]:
    if isinstance(messages, Incoming):
        return messages.roles
    return [m.role for m in messages]
