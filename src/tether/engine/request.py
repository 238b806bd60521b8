"""What a turn is asked to do, and where it ran."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tether.compaction.policy import CompactionMode
from tether.engine.events import Projection
from tether.engine.merge import HistoryMode
from tether.model import Message
from tether.store.base import IdempotencyKey

ConcurrencyMode = Literal["enqueue", "reject"]
MatchMode = Literal["auto", "off"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnRequest:
    tenant_id: str
    conversation_id: str | None
    messages: Sequence[Message]  # engine/incoming.py: parsed as read
    model: str | None
    stream: bool
    params: dict[str, Any]  # passed to the upstream as they are
    projection: Projection  # the protocol adapter that renders this turn's events
    history: HistoryMode = "auto"
    compaction: CompactionMode = "auto"
    concurrency: ConcurrencyMode = "enqueue"
    idempotency: IdempotencyKey | None = None
    if_match: str | None = None  # run only on this transcript version (an entity tag)
    match: MatchMode = "auto"  # continue the conversation a full history extends
    tools: frozenset[str] | None = None  # X-Tether-Tools: the server tools asked for (None: all)
    notes: dict[str, Any] | None = None  # put on the turn's record (a protocol's own facts)
    store: bool = True  # False: the turn runs on what is stored and writes nothing (no record,
    # no messages, no checkpoint, no tool journal); the caller turns compaction and tools off


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnInfo:
    """Where a turn ran: every protocol reports it (headers, the `tether` object)."""

    conversation_id: str
    turn_id: str
    epoch: int
    forked_from: tuple[str, int] | None = None
    compacted: bool = False
    tokens_before: int | None = None
    tokens_after: int | None = None
    version: int = 0  # the transcript's last seq once this turn is committed


def etag(version: int) -> str:
    """A conversation's transcript version as an entity tag."""
    return f'"v{version}"'


def matches(if_match: str, version: int) -> bool:
    """RFC 9110 If-Match against the current version (`*` matches any existing one)."""
    tags = [t.strip() for t in if_match.split(",")]
    return ("*" in tags and version > 0) or etag(version) in tags or f"W/{etag(version)}" in tags
