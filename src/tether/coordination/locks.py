"""One turn at a time per conversation, in this process: FIFO queues with a bounded wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tether.errors import TetherError


class TurnLocks:
    def __init__(self, wait_timeout: float) -> None:
        self.wait_timeout = wait_timeout
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(
        self,
        tenant_id: str,
        conversation_id: str,
        timeout: float | None = None,
        reject: bool = False,
    ) -> AsyncIterator[None]:
        """Wait (FIFO) for the conversation; 409 conversation_busy after the bounded wait, or
        at once when `reject` and another turn holds it or waits for it."""
        key = (tenant_id, conversation_id)
        lock, users = self._locks.get(key, (None, 0))
        if reject and users:
            # Decided on the count of holders and waiters, registered without awaiting: the
            # lock itself may look free for a moment (just released to a waiter that has not
            # run yet), and two requests arriving together must not both see it free.
            raise _busy(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            wait = self.wait_timeout if timeout is None else timeout
            try:
                # not asyncio.wait_for: on Python 3.11 it wraps acquire() in a task, so a free
                # lock is not taken before this coroutine yields
                async with asyncio.timeout(wait):
                    await lock.acquire()
            except TimeoutError:
                raise _busy(conversation_id) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock_, users_ = self._locks[key]
            if users_ <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_, users_ - 1)


def _busy(conversation_id: str) -> TetherError:
    return TetherError(
        409,
        "conversation_busy",
        f"conversation {conversation_id!r} is busy with another turn; retry shortly",
        headers={"Retry-After": "1"},
    )
