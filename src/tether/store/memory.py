"""An in-memory `Store` (`open_store("memory://")`): the seam in-process tests use. It keeps the
SQLite store's semantics (tests/test_store_contract.py runs against both): conflicts, aliases,
forks copying the prefix, checkpoints, idempotency with retention, owner sweeps. Every method
runs without awaiting, so each is one atomic step on the event loop; what is stored is copied
in and out through JSON, as a database would, so no caller shares a mutable value with it."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from tether.model import Checkpoint, Conversation, Message, ToolStep, Turn
from tether.store import memory_manage as manage
from tether.store.base import (
    ApiKeyRow,
    ConversationFilter,
    IdempotencyKey,
    IdempotencyRecord,
    ImportedConversation,
    Loaded,
    NewConversation,
    SearchHit,
    SearchQuery,
    TurnCommit,
)
from tether.store.errors import ConflictError
from tether.store.memory_db import (
    MemoryDatabase,
    _ApiKey,
    _checkpoint,
    _Claim,
    _json,
    _message,
    _Recorded,
    _turn,
)

MIGRATIONS = [1]  # one version: the whole schema at once


class MemoryStore:
    def __init__(
        self, url: str = "memory://", owner: str = "local", database: MemoryDatabase | None = None
    ) -> None:
        self.url = url
        self.owner = owner
        self.db = MemoryDatabase() if database is None else database

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def storage_problem(self) -> str | None:
        return None

    async def migrate(self) -> list[int]:
        if self.db.migrated:
            return []
        self.db.migrated = True
        return list(MIGRATIONS)

    # -- tenants and keys -----------------------------------------------------------------
    async def ensure_tenant(self, tenant_id: str) -> None:
        self.db.tenants.setdefault(tenant_id, time.time())

    async def add_api_key(self, tenant_id: str, key_hash: str, prefix: str) -> None:
        if any(k.key_hash == key_hash for k in self.db.api_keys):
            raise ConflictError(f"an API key with this hash already exists (prefix {prefix!r})")
        now = time.time()
        self.db.tenants.setdefault(tenant_id, now)
        self.db.api_keys.append(_ApiKey(tenant_id, key_hash, prefix, now))

    async def revoke_api_key(self, prefix: str, key_hash: str | None = None) -> int:
        matches = [
            k
            for k in self.db.api_keys
            if k.revoked_at is None
            and k.prefix == prefix
            and (key_hash is None or k.key_hash == key_hash)
        ]
        if len(matches) == 1:
            matches[0].revoked_at = time.time()
        return len(matches)

    async def tenant_for_key(self, key_hash: str) -> str | None:
        for k in self.db.api_keys:
            if k.key_hash == key_hash and k.revoked_at is None:
                return k.tenant_id
        return None

    async def list_api_keys(self) -> list[ApiKeyRow]:
        return [
            ApiKeyRow(k.prefix, k.tenant_id, k.created_at, k.revoked_at) for k in self.db.api_keys
        ]

    async def count_api_keys(self) -> int:
        return len(self.db.api_keys)  # revoked keys count (see the protocol)

    # -- conversations --------------------------------------------------------------------
    def _resolve(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        key = (tenant_id, conversation_id)
        pk = self.db.by_id.get(key)
        if pk is None:
            pk = self.db.aliases.get(key)
        return None if pk is None else self.db.conversations[pk]

    async def resolve(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        return self._resolve(tenant_id, conversation_id)

    def _messages(self, pk: int, after: int = 0, through: int | None = None) -> list[Message]:
        stored = self.db.messages.get(pk, [])
        end = len(stored) if through is None else max(0, min(through, len(stored)))
        return [_message(m) for m in stored[max(0, after) : end]]  # seq n is at index n - 1

    async def load_messages(
        self, conversation_pk: int, after_seq: int = 0, through_seq: int | None = None
    ) -> list[Message]:
        return self._messages(conversation_pk, after_seq, through_seq)

    async def load_conversation(self, tenant_id: str, conversation_id: str, full: bool) -> Loaded:
        conv = self._resolve(tenant_id, conversation_id)
        if conv is None:
            return Loaded(None)
        checkpoint = self._latest(conv.pk) if conv.epoch else None
        after = 0 if full or checkpoint is None else checkpoint.covers_through_seq
        return Loaded(conv, checkpoint, self._messages(conv.pk, after))

    def _latest(self, pk: int) -> Checkpoint | None:
        listed = self.db.checkpoints.get(pk)
        return _checkpoint(listed[-1]) if listed else None

    async def latest_checkpoint(self, conversation_pk: int) -> Checkpoint | None:
        return self._latest(conversation_pk)

    async def list_checkpoints(self, conversation_pk: int) -> list[Checkpoint]:
        return [_checkpoint(cp) for cp in self.db.checkpoints.get(conversation_pk, [])]

    def _insert_checkpoint(self, pk: int, cp: Checkpoint, epoch: int) -> None:
        stored = _checkpoint(cp, epoch=epoch, created_at=cp.created_at or time.time())
        self.db.checkpoints.setdefault(pk, []).append(stored)

    async def commit_checkpoint(self, conversation_pk: int, checkpoint: Checkpoint) -> Conversation:
        conv = self.db.conversations.get(conversation_pk)
        if conv is None:
            raise ConflictError(f"conversation {conversation_pk} does not exist")
        if conv.epoch != checkpoint.epoch - 1:
            raise ConflictError(
                f"conversation is at epoch {conv.epoch}, not {checkpoint.epoch - 1}"
            )
        if max(checkpoint.covers_through_seq, checkpoint.prune_through_seq) > conv.last_seq:
            raise ConflictError("checkpoint covers messages that do not exist")
        self._insert_checkpoint(conversation_pk, checkpoint, checkpoint.epoch)
        conv = self.db.conversations[conversation_pk] = replace(conv, epoch=checkpoint.epoch)
        return conv

    def _create(self, commit: TurnCommit, new: NewConversation, now: float) -> Conversation:
        """The new conversation of a commit (a fork with its parent's prefix), after checking
        it can be made; nothing is stored here."""
        if (commit.tenant_id, new.id) in self.db.by_id:
            raise ConflictError(f"conversation {new.id!r} already exists")
        parent = (
            None if new.forked_from_pk is None else self.db.conversations.get(new.forked_from_pk)
        )
        if new.forked_from_pk is not None and parent is None:
            raise ConflictError(f"cannot fork conversation {new.forked_from_pk}: it does not exist")
        last_seq = 0
        if new.forked_from_pk is not None and new.forked_from_seq:
            copied = min(new.forked_from_seq, len(self.db.messages.get(new.forked_from_pk, [])))
            if copied != new.forked_from_seq:
                raise ConflictError(
                    f"cannot fork at seq {new.forked_from_seq}: the parent has {copied} messages"
                )
            last_seq = new.forked_from_seq
        return Conversation(
            pk=self.db.last_pk + 1,
            id=new.id,
            tenant_id=commit.tenant_id,
            title=new.title,
            model=new.model,
            system_prompt=commit.system_prompt,
            last_seq=last_seq,
            turn_count=0,
            epoch=0,
            usage_prompt_tokens=None,
            usage_through_seq=None,
            usage_epoch=None,
            forked_from_id=None if parent is None else parent.id,
            forked_from_seq=new.forked_from_seq,
            created_at=now,
            updated_at=now,
            forked_from_pk=new.forked_from_pk,
        )

    def _existing(self, commit: TurnCommit) -> Conversation:
        assert commit.conversation_pk is not None
        conv = self.db.conversations.get(commit.conversation_pk)
        if conv is None:
            raise ConflictError(f"conversation {commit.conversation_pk} does not exist")
        if conv.last_seq != commit.expected_last_seq:
            raise ConflictError(
                f"conversation moved on: last seq {conv.last_seq}, "
                f"expected {commit.expected_last_seq}"
            )
        return conv

    def _store_new(self, commit: TurnCommit, conv: Conversation, new: NewConversation) -> None:
        self.db.tenants.setdefault(commit.tenant_id, conv.created_at)
        self.db.last_pk = conv.pk
        self.db.by_id[(commit.tenant_id, conv.id)] = conv.pk
        self.db.messages[conv.pk] = []
        if new.forked_from_pk is not None and new.forked_from_seq:
            parent = self.db.messages[new.forked_from_pk][: new.forked_from_seq]
            self.db.messages[conv.pk] = [replace(m) for m in parent]
        if commit.inherit_checkpoint is not None:
            self._insert_checkpoint(conv.pk, commit.inherit_checkpoint, 1)

    async def commit_turn(self, commit: TurnCommit) -> Conversation:
        now = time.time()
        new = commit.new_conversation
        conv = self._existing(commit) if new is None else self._create(commit, new, now)
        turn = commit.turn
        added = [
            _message(m, seq=conv.last_seq + 1 + i, turn_id=turn.id, created_at=now)
            for i, m in enumerate(commit.messages)
        ]
        if new is not None:
            self._store_new(commit, conv, new)
        self.db.messages[conv.pk].extend(added)
        new_last = conv.last_seq + len(added)
        usage = turn.usage or {}
        # as in SQLite: Tether's own estimate (no usage from the upstream) is not kept
        prompt_tokens = None if usage.get("estimated") else usage.get("prompt_tokens")
        conv = replace(
            conv,
            epoch=1 if new is not None and commit.inherit_checkpoint is not None else conv.epoch,
            system_prompt=commit.system_prompt
            if commit.system_changed and new is None
            else conv.system_prompt,
            last_seq=new_last,
            turn_count=conv.turn_count + 1,
            updated_at=now,
            model=turn.model if turn.model is not None else conv.model,
            usage_prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
            usage_through_seq=new_last - 1,
            usage_epoch=commit.view_epoch,
            history_hash=commit.history_hash,
            history_len=commit.history_len,
        )
        self.db.conversations[conv.pk] = conv
        first = conv.last_seq - len(added) + 1 if added else None
        last = new_last if added else None
        recorded = replace(_turn(turn), conversation_id=None, first_seq=first, last_seq=last)
        self.db.turns[turn.id] = _Recorded(conv.pk, recorded, self.owner)
        if commit.response is not None:
            r = commit.response
            claim = self.db.claims.get((r.key.tenant_id, r.key.route, r.key.key))
            if claim is not None:
                claim.status, claim.stream = "completed", r.stream
                claim.response, claim.headers = r.response, _json(r.headers)
                claim.conversation_pk = conv.pk
        return conv

    async def record_turn(self, conversation_pk: int, turn: Turn) -> None:
        recorded = replace(_turn(turn), conversation_id=None, first_seq=None, last_seq=None)
        self.db.turns[turn.id] = _Recorded(conversation_pk, recorded, self.owner)

    def _mine(self, owner: str | None) -> bool:
        return owner is None or owner == self.owner

    async def abandon_running_turns(self, error: dict[str, Any]) -> int:
        now = time.time()
        left = [
            r for r in self.db.turns.values() if r.turn.status == "running" and self._mine(r.owner)
        ]
        for r in left:
            r.turn = replace(r.turn, status="incomplete", error=_json(error), finished_at=now)
        return len(left)

    async def get_turn(self, tenant_id: str, conversation_id: str, turn_id: str) -> Turn | None:
        conv = self._resolve(tenant_id, conversation_id)
        row = self.db.turns.get(turn_id)
        if conv is None or row is None or row.conversation_pk != conv.pk:
            return None
        return replace(_turn(row.turn), conversation_id=conv.id)

    async def find_turn(self, tenant_id: str, turn_id: str) -> Turn | None:
        return manage.find_turn(self.db, tenant_id, turn_id)

    async def note_turn(self, tenant_id: str, turn_id: str, key: str, value: Any) -> bool:
        return manage.note_turn(self.db, tenant_id, turn_id, key, value)

    async def list_conversations(
        self,
        tenant_id: str,
        limit: int = 50,
        *,
        after: Conversation | None = None,
        filters: ConversationFilter | None = None,
    ) -> list[Conversation]:
        return manage.list_conversations(self.db, tenant_id, limit, after, filters)

    async def update_conversation(
        self,
        conversation_pk: int,
        *,
        title: str | None = None,
        clear_title: bool = False,
        metadata: dict[str, str] | None = None,
        expected_last_seq: int | None = None,
    ) -> Conversation:
        return manage.update(
            self.db, conversation_pk, title, clear_title, metadata, expected_last_seq
        )

    async def delete_conversation(self, conversation_pk: int) -> dict[str, int]:
        return manage.delete(self.db, conversation_pk)

    async def fork_conversation(
        self, tenant_id: str, conversation_pk: int, at_seq: int, new_id: str
    ) -> Conversation:
        return manage.fork(self.db, tenant_id, conversation_pk, at_seq, new_id)

    async def remove_messages(self, conversation_pk: int, seqs: list[int], at: float) -> int:
        return manage.remove(self.db, conversation_pk, seqs, at)

    async def list_aliases(self, conversation_pk: int) -> list[str]:
        return [a for (_, a), pk in self.db.aliases.items() if pk == conversation_pk]

    async def list_turns(self, conversation_pk: int, limit: int = 100) -> list[Turn]:
        return manage.turns(self.db, conversation_pk, limit)

    async def import_conversation(
        self, tenant_id: str, conversation: ImportedConversation
    ) -> Conversation | None:
        return manage.import_conversation(self.db, tenant_id, conversation)

    async def search(self, tenant_id: str, query: SearchQuery) -> list[SearchHit]:
        return manage.search(self.db, tenant_id, query)

    async def find_by_history(self, tenant_id: str, hashes: list[bytes]) -> list[Conversation]:
        wanted, convs = set(hashes), self.db.conversations.values()
        return [c for c in convs if c.tenant_id == tenant_id and c.history_hash in wanted]

    async def add_alias(self, tenant_id: str, alias: str, conversation_pk: int) -> None:
        if (tenant_id, alias) in self.db.aliases:
            raise ConflictError(f"alias {alias!r} already exists")
        if conversation_pk not in self.db.conversations:
            raise ConflictError(f"conversation {conversation_pk} does not exist")
        self.db.aliases[(tenant_id, alias)] = conversation_pk

    # -- idempotency ----------------------------------------------------------------------
    async def claim_idempotency(
        self, key: IdempotencyKey, retention: float
    ) -> IdempotencyRecord | None:
        now = time.time()
        ident = (key.tenant_id, key.route, key.key)
        held = self.db.claims.get(ident)
        if held is not None and held.created_at >= now - retention:
            h, headers = held, _json(held.headers)
            return IdempotencyRecord(h.status, h.key.request_hash, h.stream, h.response, headers)
        self.db.claims[ident] = _Claim(key, self.owner, now)  # in place of one past retention
        return None

    async def release_idempotency(self, key: IdempotencyKey) -> None:
        ident = (key.tenant_id, key.route, key.key)
        held = self.db.claims.get(ident)
        if held is not None and held.status == "running":
            del self.db.claims[ident]

    async def reap_idempotency(self, retention: float, running_too: bool = False) -> int:
        cutoff = time.time() - retention
        gone = [
            ident
            for ident, c in self.db.claims.items()
            if c.created_at < cutoff
            or (running_too and c.status == "running" and self._mine(c.owner))
        ]
        for ident in gone:
            del self.db.claims[ident]
        return len(gone)

    async def record_tool_step(self, step: ToolStep) -> None:
        self.db.tool_steps[(step.turn_id, step.call_id)] = step

    async def list_tool_steps(self, turn_id: str) -> list[ToolStep]:
        steps = [s for (t, _), s in self.db.tool_steps.items() if t == turn_id]
        return sorted(steps, key=lambda s: (s.round, s.started_at))

    async def counts(self) -> dict[str, int]:
        return manage.counts(self.db)
