"""The in-process coordinator: one server per database (SQLite: held by a file lock).

Every write to a conversation passes through this process's engine, which updates or drops its
cached view as it commits; so a cached view is current by construction (`view_current`), and if
it ever were not, the commit's check of the last seq refuses the turn (409) and drops it."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from tether.coordination.locks import TurnLocks
from tether.coordination.lru import Lru
from tether.coordination.stream import TurnStream


class LocalCoordinator:
    def __init__(
        self, *, owner: str = "local", queue_timeout: float = 30.0, resume_bytes: int = 1 << 26
    ) -> None:
        self.owner = owner
        self.locks = TurnLocks(queue_timeout)
        self._running: dict[str, TurnStream] = {}
        # finished streams stay resumable (by Last-Event-ID) while they fit this many bytes
        self._recent: Lru[str, TurnStream] = Lru(resume_bytes, TurnStream.memory)

    def hold(
        self, tenant_id: str, conversation_id: str, *, reject: bool = False
    ) -> AbstractAsyncContextManager[None]:
        return self.locks.hold(tenant_id, conversation_id, reject=reject)

    def open(self, stream: TurnStream) -> None:
        self._running[stream.turn_id] = stream

    def find(self, turn_id: str) -> TurnStream | None:
        return self._running.get(turn_id) or self._recent.get(turn_id)

    def finish(self, stream: TurnStream) -> None:
        self._running.pop(stream.turn_id, None)
        if stream.stream and stream.log:
            self._recent.put(stream.turn_id, stream)

    def running(self) -> list[TurnStream]:
        return list(self._running.values())

    def view_current(self, tenant_id: str, conversation_id: str, state: tuple[int, int]) -> bool:
        return True
