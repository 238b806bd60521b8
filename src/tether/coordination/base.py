"""The coordination seam: what the engine asks of whoever coordinates turns.

In-process (`local.py`) it is a dict and some locks. Across replicas (a later PostgreSQL
implementation) the same five questions are answered by lease rows, LISTEN/NOTIFY and a shared
event table; the engine does not change."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from tether.coordination.stream import TurnStream


class Coordinator(Protocol):
    # this server's name in the records it owns (running turns, idempotency claims); start-up
    # sweeps touch only rows with this owner, never another replica's
    owner: str

    def hold(
        self, tenant_id: str, conversation_id: str, *, reject: bool = False
    ) -> AbstractAsyncContextManager[None]:
        """One turn at a time per conversation: wait (FIFO, bounded) for it, or with `reject`
        fail at once when another turn holds it or waits for it (409 conversation_busy)."""
        ...

    def open(self, stream: TurnStream) -> None:
        """A turn started here: its stream becomes findable by its turn id."""
        ...

    def find(self, turn_id: str) -> TurnStream | None:
        """A turn's stream, running or finished and still buffered."""
        ...

    def finish(self, stream: TurnStream) -> None:
        """The turn ended: its stream stays findable while the resume buffer holds it."""
        ...

    def running(self) -> list[TurnStream]:
        """The turns running here now."""
        ...

    def view_current(self, tenant_id: str, conversation_id: str, state: tuple[int, int]) -> bool:
        """Whether a view cached here at (last seq, epoch) is still the conversation's."""
        ...
