"""The turn's data: what was asked, where it runs, how its output reaches the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from tether.compaction.policy import CompactionMode
from tether.compaction.tokens import count_message
from tether.engine.merge import HistoryMode, text_of
from tether.model import Message
from tether.store.base import IdempotencyKey
from tether.upstream.wire import chat_message

ConcurrencyMode = Literal["enqueue", "reject"]
MatchMode = Literal["auto", "off"]


@dataclass(frozen=True, slots=True)
class TurnRequest:
    tenant_id: str
    conversation_id: str | None
    messages: Sequence[Message]  # engine/incoming.py: parsed as read
    model: str | None
    stream: bool
    include_usage: bool
    params: dict[str, Any]
    history: HistoryMode = "auto"
    compaction: CompactionMode = "auto"
    concurrency: ConcurrencyMode = "enqueue"
    idempotency: IdempotencyKey | None = None
    if_match: str | None = None  # the If-Match header: run only on this transcript version
    match: MatchMode = "auto"  # X-Tether-Match: continue the conversation a history extends


@dataclass(frozen=True, slots=True)
class TurnInfo:
    """Where a turn ran: reported in headers and in the `tether` object."""

    conversation_id: str
    turn_id: str
    epoch: int
    forked_from: tuple[str, int] | None = None
    compacted: bool = False
    tokens_before: int | None = None
    tokens_after: int | None = None
    version: int = 0  # the transcript's last seq once this turn is committed

    def headers(self) -> dict[str, str]:
        return {
            "X-Hermes-Session-Id": self.conversation_id,
            "X-Tether-Conversation": self.conversation_id,
            "X-Tether-Turn": self.turn_id,
            "X-Tether-Epoch": str(self.epoch),
            "ETag": etag(self.version),
        }

    def tether(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
            "epoch": self.epoch,
            "compacted": self.compacted,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
        }
        if self.forked_from:
            out["forked_from"] = {
                "conversation_id": self.forked_from[0],
                "seq": self.forked_from[1],
            }
        return out


class RunningTurn:
    """The turn's outlets. Streaming: an append-only log of SSE payloads (JSON bytes, or a
    comment line starting with b':'), read by any number of followers — the client that started
    the turn and any that resume it by event id. JSON: `result` resolves to the response body."""

    def __init__(self, stream: bool, tenant_id: str = "", turn_id: str = "") -> None:
        loop = asyncio.get_running_loop()
        self.stream = stream
        self.tenant_id = tenant_id
        self.turn_id = turn_id
        self.conversation_id: str | None = None  # known once the turn is ready
        self.ready: asyncio.Future[TurnInfo] = loop.create_future()
        self.result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.final_headers: dict[str, str] = {}  # where it ran, set with `result`
        self.log: list[bytes] = []
        self.size = 0  # bytes in the log
        self.closed = False
        self.status = "running"  # then completed | failed | incomplete | cancelled
        self.task: asyncio.Task[None] | None = None
        self.committing = False  # the commit began: the turn can no longer be cancelled
        self.cancel_reason: str | None = None  # cancelled | shutdown
        self._changed = asyncio.Event()

    def publish(self, payload: bytes) -> None:
        # a right-sized copy: a small orjson.dumps result holds a 4 KiB buffer (4,098 bytes
        # traced for a 68-byte result), and finished streams stay in memory for resuming
        payload = bytes(memoryview(payload))
        self.log.append(payload)
        self.size += len(payload)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

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


def etag(version: int) -> str:
    """A conversation's transcript version as an entity tag."""
    return f'"v{version}"'


def matches(if_match: str, version: int) -> bool:
    """RFC 9110 If-Match against the current version (`*` matches any existing one)."""
    tags = [t.strip() for t in if_match.split(",")]
    return ("*" in tags and version > 0) or etag(version) in tags or f"W/{etag(version)}" in tags


def with_tokens(m: Message) -> Message:
    return replace(m, tokens=count_message(chat_message(m)))


def title_of(messages: list[Message]) -> str | None:
    for m in messages:
        if m.role == "user":
            text = " ".join(text_of(m.content).split())
            return text[:80] or None
    return None


def assistant_message(openai_message: dict[str, Any], tokens: int | None) -> Message:
    known = {"role", "content", "tool_calls", "tool_call_id", "name"}
    extra = {k: v for k, v in openai_message.items() if k not in known and v is not None}
    msg = Message(
        role="assistant",
        content=openai_message.get("content"),
        tool_calls=openai_message.get("tool_calls") or None,
        name=openai_message.get("name"),
        extra=extra or None,
    )
    return with_tokens(msg) if tokens is None else replace(msg, tokens=tokens)
