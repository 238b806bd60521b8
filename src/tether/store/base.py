"""The persistence interface. Engine and API code talk only to `Store`; SQLite and PostgreSQL
implement it. Records are plain frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tether.model import Checkpoint, Conversation, Message, ToolStep, Turn


@dataclass(frozen=True, slots=True)
class NewConversation:
    id: str
    title: str | None
    model: str | None
    forked_from_pk: int | None = None
    forked_from_seq: int | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    tenant_id: str
    route: str
    key: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What a key already holds: a turn still running, or the stored result to replay."""

    status: str  # running | completed
    request_hash: str
    stream: bool = False
    response: bytes | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response a keyed turn commits with, for replay."""

    key: IdempotencyKey
    stream: bool
    response: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class TurnCommit:
    """Everything one successful turn writes, applied in one transaction.

    Exactly one of `conversation_pk` (an existing conversation) or `new_conversation` is set.
    `expected_last_seq` guards against a concurrent writer. For a fork, `new_conversation`
    names the parent and the seq through which its messages are copied first.
    """

    tenant_id: str
    turn: Turn
    messages: list[Message]
    conversation_pk: int | None = None
    new_conversation: NewConversation | None = None
    expected_last_seq: int = 0
    system_prompt: str | None = None
    system_changed: bool = False
    view_epoch: int = 0  # the checkpoint epoch the upstream prompt was built on
    inherit_checkpoint: Checkpoint | None = None  # a fork's copy of its parent's checkpoint
    response: StoredResponse | None = None  # an idempotency key's result, stored atomically
    history_hash: bytes | None = None  # the transcript's hash after this turn (None: unknown)
    history_len: int | None = None


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a turn reads, in one round trip."""

    conversation: Conversation | None
    checkpoint: Checkpoint | None = None
    messages: list[Message] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationFilter:
    """What GET /v1/conversations (and search) narrow a tenant's conversations to."""

    title: str | None = None  # a substring of the title, case-insensitive
    model: str | None = None
    created_after: float | None = None  # unix seconds, exclusive
    created_before: float | None = None
    forked_from: str | None = None  # the parent conversation's own id
    metadata: dict[str, str] | None = None  # every pair must match


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportedCheckpoint:
    """A compaction an import brings along (a Hermes summary row): it stands in for the
    conversation's messages through `covers_through_seq`."""

    covers_through_seq: int
    summary: str
    created_at: float
    model: str | None = None
    tokens_before: int = 0
    tokens_after: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportedConversation:
    """One conversation written whole by an import (`tether conversations import`, `tether
    import hermes`). `messages` are in order, seq 1..n set. A fork names its parent by id
    (imported before it, or already stored) and holds its copied prefix 1..`forked_from_seq`."""

    id: str
    aliases: list[str]
    title: str | None
    model: str | None
    system_prompt: str | None
    metadata: dict[str, str]
    created_at: float
    updated_at: float
    messages: list[Message]
    checkpoints: list[ImportedCheckpoint]
    forked_from: str | None = None
    forked_from_seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchQuery:
    """A full-text query (FTS5 syntax, built by engine/search.py) over one tenant's
    transcripts: message text, tool outputs and checkpoint summaries."""

    match: str  # the FTS5 MATCH expression
    cjk: bool  # True: run it on the trigram index (the query holds CJK text)
    like: list[str] | None = None  # substrings (short CJK words) each hit must contain
    group: bool = True  # one hit per conversation (its best)
    limit: int = 20
    filters: ConversationFilter | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchHit:
    conversation_id: str
    title: str | None
    kind: str  # message | summary
    seq: int  # the message's seq; for a summary, the last seq it covers
    epoch: int | None  # a summary's checkpoint epoch
    role: str | None
    snippet: str  # plain text around the match
    highlights: list[tuple[int, int]]  # [start, end) offsets of the matched terms in snippet
    score: float  # lower is better (store/ranking.py: minus the text's relevance)
    created_at: float


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    prefix: str
    tenant_id: str
    created_at: float
    revoked_at: float | None


class Store(Protocol):
    """What Tether needs from a database. Every method is one short transaction at most."""

    url: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def storage_problem(self) -> str | None:
        """Why the database cannot take writes any more (its file deleted or replaced while
        serving, …), or None. Cheap: /health asks it every time."""
        ...

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied."""
        ...

    async def ensure_tenant(self, tenant_id: str) -> None: ...
    async def add_api_key(self, tenant_id: str, key_hash: str, prefix: str) -> None: ...
    async def tenant_for_key(self, key_hash: str) -> str | None: ...
    async def revoke_api_key(self, prefix: str, key_hash: str | None = None) -> int:
        """Revoke the one active key with this prefix (and hash, if given). Returns how many
        active keys matched; nothing is revoked unless exactly one did."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRow]:
        """Every key ever created (revoked ones too), oldest first; never the key itself."""
        ...

    async def count_api_keys(self) -> int:
        """Keys ever created, revoked ones included: Tether runs open (no auth) only on a
        database that never had a key."""
        ...

    async def resolve(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        """The conversation this id (its own or an alias) names in the tenant, if any."""
        ...

    async def load_messages(
        self, conversation_pk: int, after_seq: int = 0, through_seq: int | None = None
    ) -> list[Message]: ...
    async def load_conversation(self, tenant_id: str, conversation_id: str, full: bool) -> Loaded:
        """The conversation, its latest checkpoint and its messages (all of them if `full`,
        else those after the checkpoint's watermark)."""
        ...

    async def latest_checkpoint(self, conversation_pk: int) -> Checkpoint | None: ...
    async def list_checkpoints(self, conversation_pk: int) -> list[Checkpoint]: ...
    async def commit_checkpoint(self, conversation_pk: int, checkpoint: Checkpoint) -> Conversation:
        """Insert the checkpoint as epoch `checkpoint.epoch`; raise ConflictError unless the
        conversation is at epoch `checkpoint.epoch - 1` and holds its covered messages."""
        ...

    async def commit_turn(self, commit: TurnCommit) -> Conversation:
        """Append a turn's messages and its record atomically; raise ConflictError if the
        conversation's last seq is not `expected_last_seq`."""
        ...

    async def record_turn(self, conversation_pk: int, turn: Turn) -> None:
        """Insert or replace a turn's record outside a commit: running at its start, or how it
        ended without committing (failed, incomplete, cancelled)."""
        ...

    async def abandon_running_turns(self, error: dict[str, Any]) -> int:
        """At start-up: turns a previous process left running never committed; mark them
        incomplete with `error`. Returns how many."""
        ...

    async def get_turn(self, tenant_id: str, conversation_id: str, turn_id: str) -> Turn | None:
        """The turn's record in the conversation this id (or an alias) names, with its
        `conversation_id` (the conversation's own id) and message span set."""
        ...

    async def find_turn(self, tenant_id: str, turn_id: str) -> Turn | None:
        """A turn of the tenant's by its id alone (a Responses API response id names one),
        with its conversation's own id and its message span."""
        ...

    async def list_conversations(
        self,
        tenant_id: str,
        limit: int = 50,
        *,
        after: Conversation | None = None,
        filters: ConversationFilter | None = None,
    ) -> list[Conversation]:
        """Newest activity first (updated_at, then pk, descending); `after` continues a listing
        past that conversation (keyset pagination)."""
        ...

    async def update_conversation(
        self,
        conversation_pk: int,
        *,
        title: str | None = None,
        clear_title: bool = False,
        metadata: dict[str, str] | None = None,
        expected_last_seq: int | None = None,
    ) -> Conversation:
        """Set the title (or clear it) and/or replace the metadata; ConflictError if
        `expected_last_seq` is given and the conversation has moved past it."""
        ...

    async def delete_conversation(self, conversation_pk: int) -> dict[str, int]:
        """Remove the conversation and everything it owns (messages, checkpoints, turns and
        their tool journal, idempotency records, aliases, search rows), in one transaction.
        Its forks stay, with their copied prefix (their `forked_from` becomes unknown).
        Returns the rows removed per table."""
        ...

    async def fork_conversation(
        self, tenant_id: str, conversation_pk: int, at_seq: int, new_id: str
    ) -> Conversation:
        """A new conversation `new_id` holding copies of messages 1..at_seq (and the latest
        checkpoint that lies within them)."""
        ...

    async def list_aliases(self, conversation_pk: int) -> list[str]: ...
    async def note_turn(self, tenant_id: str, turn_id: str, key: str, value: Any) -> bool:
        """Set one note on a turn's record (its other notes and fields kept): whether the
        tenant has that turn."""
        ...

    async def remove_messages(self, conversation_pk: int, seqs: list[int], at: float) -> int:
        """Take messages out of the model's view (`extra[REMOVED] = at`); they stay in the
        transcript with their seq. How many were marked (an already removed one is not)."""
        ...

    async def list_turns(self, conversation_pk: int, limit: int = 100) -> list[Turn]:
        """The conversation's most recent turns, newest first, with their message spans."""
        ...

    async def import_conversation(
        self, tenant_id: str, conversation: ImportedConversation
    ) -> Conversation | None:
        """Write an imported conversation, its checkpoints and aliases in one transaction;
        None (nothing written) if its id or any alias already names a conversation in the
        tenant."""
        ...

    async def search(self, tenant_id: str, query: SearchQuery) -> list[SearchHit]:
        """Ranked hits; QueryError for a query the index rejects (FTS5 syntax)."""
        ...

    async def find_by_history(self, tenant_id: str, hashes: list[bytes]) -> list[Conversation]:
        """The tenant's conversations whose transcript hash is one of `hashes`."""
        ...

    async def add_alias(self, tenant_id: str, alias: str, conversation_pk: int) -> None: ...
    async def claim_idempotency(
        self, key: IdempotencyKey, retention: float
    ) -> IdempotencyRecord | None:
        """Claim the key for a new turn (None), or return what it already holds. Records older
        than `retention` seconds are forgotten first."""
        ...

    async def release_idempotency(self, key: IdempotencyKey) -> None:
        """Forget a claim whose turn failed, so a retry runs again."""
        ...

    async def reap_idempotency(self, retention: float, running_too: bool = False) -> int:
        """Delete completed records older than `retention` (and, at start-up, every claim
        left running by a previous process, whose turn never committed)."""
        ...

    async def record_tool_step(self, step: ToolStep) -> None:
        """Journal one server-side tool call as it completes (its own short transaction)."""
        ...

    async def list_tool_steps(self, turn_id: str) -> list[ToolStep]:
        """A turn's journaled tool calls, in the order they ran."""
        ...

    async def counts(self) -> dict[str, int]:
        """Row counts per table (operators' overview and tests)."""
        ...
