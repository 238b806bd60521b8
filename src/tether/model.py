"""Tether's domain records: conversations, their messages and checkpoints, turns.

Plain typed records with no wire format and no storage detail: a protocol renders them
(`tether.upstream.wire` for the Chat Completions shape the upstream and the REST routes speak),
a store persists them (`tether.store`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Conversation:
    pk: int
    id: str
    tenant_id: str
    title: str | None
    model: str | None
    system_prompt: str | None
    last_seq: int
    turn_count: int
    epoch: int
    usage_prompt_tokens: int | None
    usage_through_seq: int | None
    usage_epoch: int | None
    forked_from_id: str | None
    forked_from_seq: int | None
    created_at: float
    updated_at: float
    # the transcript's hash and its number of history messages (engine/fingerprint.py); None
    # where not known yet (written before the hash existed)
    history_hash: bytes | None = None
    history_len: int | None = None
    forked_from_pk: int | None = None
    metadata: dict[str, str] | None = None  # the owner's labels (PATCH …/conversations/{id})


@dataclass(slots=True)
class Message:
    """One message as it is (or will be) stored. `content` is str, a list of parts, or None.

    Treated as immutable (change one with `dataclasses.replace`) but not declared frozen: a
    frozen dataclass's __init__ sets each field through object.__setattr__, which made building
    the 200 messages a turn reads 2.9× slower (1.96 against 0.68 µs per row, measured)."""

    role: str
    content: Any = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    extra: dict[str, Any] | None = None
    tokens: int = 0
    seq: int = 0
    turn_id: str | None = None
    created_at: float = 0.0

    @property
    def removed(self) -> bool:
        """Removed from the model's view (`DELETE …/items/{id}`): still in the transcript,
        with its seq and when (`extra[REMOVED]`)."""
        return bool(self.extra and REMOVED in self.extra)


REMOVED = "tether_removed"  # a message's extra field: when it left the model's view


@dataclass(slots=True, kw_only=True)
class Turn:
    """One turn: what the engine records as it runs and ends, and what a store reads back
    (`conversation_id`, and `first_seq`..`last_seq` once its messages are committed)."""

    id: str
    status: str  # running | completed | failed | incomplete | cancelled
    model: str | None
    stream: bool = False
    started_at: float
    finished_at: float | None = None
    first_token_at: float | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    compacted: bool = False
    notes: dict[str, Any] | None = None
    conversation_id: str | None = None
    first_seq: int | None = None  # the turn's messages, once committed
    last_seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A compaction: the summary (and ledger) stands in for messages seq <= covers_through_seq;
    large tool outputs with seq <= prune_through_seq are shown as stubs. Never moves messages."""

    epoch: int
    covers_through_seq: int
    prune_through_seq: int
    summary: str | None
    ledger: list[str]
    tokens_before: int
    tokens_after: int
    model: str | None
    prompt_version: str
    stats: dict[str, Any]
    turn_id: str | None = None
    created_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolStep:
    """One server-side tool call of a turn, journaled as it completes (before the turn commits),
    so a turn cut short still shows which tools ran."""

    turn_id: str
    call_id: str
    round: int  # the model call (1, 2, …) that asked for it
    tool: str  # the name the model used
    source: str  # `builtin`, `mcp:<server>`, or `none` (not offered: never run)
    arguments: str  # as the model sent them (redacted)
    status: str  # ok | error | timeout | denied | not_offered | invalid_arguments | interrupted
    output_chars: int  # the whole output's size, before any cap
    started_at: float
    finished_at: float
    tenant_id: str = ""
    conversation_id: str | None = None  # None: the turn creates its conversation
