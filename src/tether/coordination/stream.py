"""A turn's event stream: an append-only log of rendered payloads (a protocol adapter renders the
engine's events into them), read by any number of followers — the client that started the turn
and any that resume it by event id. It is what the coordinator's bus carries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable


class TurnStream:
    def __init__(self, *, stream: bool, tenant_id: str = "", turn_id: str = "") -> None:
        self.stream = stream  # the client asked for SSE (else the log holds the JSON body)
        self.tenant_id = tenant_id
        self.turn_id = turn_id
        self.conversation_id: str | None = None  # known once the turn knows where it runs
        self.status = "running"  # then completed | failed | incomplete | cancelled
        self.log: list[bytes] = []
        self.size = 0  # bytes in the log
        self.closed = False
        # set by whoever runs the turn: stop it (a reason: cancelled | shutdown) → stopped?
        self.stopper: Callable[[str], bool] | None = None
        self._changed = asyncio.Event()
        self._ended = asyncio.Event()

    def publish(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            # a right-sized copy: a small orjson.dumps result holds a 4 KiB buffer (4,098 bytes
            # traced for a 68-byte result), and finished streams stay in memory for resuming
            payload = bytes(memoryview(payload))
            self.log.append(payload)
            self.size += len(payload)
        if payloads:
            self._wake()

    def close(self, status: str) -> None:
        self.status = status
        self.closed = True
        self.stopper = None
        self._ended.set()
        self._wake()

    def stop(self, reason: str = "cancelled") -> bool:
        """Ask the turn to stop; whether it was stopped (one that began committing is not)."""
        return self.stopper(reason) if self.stopper is not None else False

    async def ended(self) -> None:
        await self._ended.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def memory(self) -> int:
        """Memory a finished stream holds: its payloads, ~90 bytes per bytes object and list
        slot, ~2 KB for its own objects."""
        return self.size + 90 * len(self.log) + 2048

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[int, list[bytes]]]:
        """The payloads after the first `after`, then live ones until the log closes, in
        batches of all that is there when the reader comes back: (number of the batch's first
        payload, counted from 1, payloads)."""
        index = max(0, after)
        while True:
            if index < len(self.log):
                batch = self.log[index:]
                yield index + 1, batch
                index += len(batch)
                continue
            if self.closed:
                return
            await self._changed.wait()
