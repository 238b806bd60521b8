"""PostgreSQL store (postgres:// and postgresql:// URLs): the queries behind the `Store`
protocol, each at most one short transaction on the pool of postgres/db.py. Several servers
may share the database: a turn's commit locks its conversation's row and checks the expected
last seq under the lock; a new conversation's id, an alias and an idempotency claim are taken
by unique keys; migrations run under a transaction-scoped advisory lock."""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from tether.model import Checkpoint, Conversation, Message, ToolStep, Turn
from tether.store.base import (
    ApiKeyRow,
    ConversationFilter,
    IdempotencyKey,
    IdempotencyRecord,
    ImportedConversation,
    Loaded,
    SearchHit,
    SearchQuery,
    TurnCommit,
)
from tether.store.errors import ConflictError, SchemaTooNew
from tether.store.postgres import keys, manage, search, sql
from tether.store.postgres.db import Conn, Database, rowcount
from tether.store.sqlite_sql import (
    CKPT_COLS,
    CONV_COLS,
    CONV_FROM,
    MSG_COLS,
    TURN_COLS,
    checkpoint_row,
    dumps,
    loads,
    message_row,
    turn_row,
)

MIGRATIONS = "tether.store.migrations.postgres"
TABLES: tuple[str, ...] = ("tenants", "api_keys", "conversations", "turns", "messages")
TABLES += ("conversation_aliases", "checkpoints", "idempotency_keys", "tool_steps")


async def _messages(c: Conn, pk: int, after: int, through: int) -> list[Message]:
    rows = await c.fetch(
        f"SELECT {MSG_COLS} FROM messages WHERE conversation_pk = $1 AND seq > $2 "
        "AND seq <= $3 ORDER BY seq",
        pk,
        after,
        through,
    )
    return [message_row(tuple(r)) for r in rows]


async def migrate(c: Conn) -> list[int]:
    """Apply the pending migrations, one server at a time (the lock is per schema)."""
    await c.execute("SELECT pg_advisory_xact_lock(hashtext('tether.migrate.' || current_schema()))")
    await c.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
        "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    )
    done = {int(r[0]) for r in await c.fetch("SELECT version FROM schema_migrations")}
    files = sorted(
        (f for f in resources.files(MIGRATIONS).iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    known = {int(f.name.split("_", 1)[0]): f for f in files}
    if done and max(done) > max(known):
        raise SchemaTooNew(
            f"the database has schema version {max(done)}, newer than this build of Tether "
            f"knows (version {max(known)}): it was written by a newer Tether"
        )
    applied = []
    for version, f in known.items():
        if version in done:
            continue
        await c.execute(f.read_text())  # a whole file: several statements, one round trip
        await c.execute(
            "INSERT INTO schema_migrations VALUES ($1, $2, $3)", version, f.name, time.time()
        )
        applied.append(version)
    return applied


class PostgresStore:
    def __init__(self, url: str, *, owner: str = "local") -> None:
        self.url = url
        self.owner = owner  # written on every turn and claim; the start-up sweeps take only these
        self.db = Database(url)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    def storage_problem(self) -> str | None:
        return self.db.problem()

    async def migrate(self) -> list[int]:
        return await self.db.write(migrate)

    # -- tenants and keys -----------------------------------------------------------------
    async def ensure_tenant(self, tenant_id: str) -> None:
        await self.db.read(lambda c: sql.ensure_tenant(c, tenant_id, time.time()))

    async def add_api_key(self, tenant_id: str, key_hash: str, prefix: str) -> None:
        await self.db.write(lambda c: keys.add(c, tenant_id, key_hash, prefix))

    async def revoke_api_key(self, prefix: str, key_hash: str | None = None) -> int:
        return await self.db.write(lambda c: keys.revoke(c, prefix, key_hash))

    async def tenant_for_key(self, key_hash: str) -> str | None:
        return await self.db.read(lambda c: keys.tenant_for(c, key_hash))

    async def list_api_keys(self) -> list[ApiKeyRow]:
        return await self.db.read(keys.listed)

    async def count_api_keys(self) -> int:
        return await self.db.read(keys.count)

    # -- conversations --------------------------------------------------------------------
    async def resolve(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        return await self.db.read(lambda c: sql.resolve(c, tenant_id, conversation_id))

    async def load_messages(
        self, conversation_pk: int, after_seq: int = 0, through_seq: int | None = None
    ) -> list[Message]:
        through = 2**31 - 1 if through_seq is None else min(through_seq, 2**31 - 1)
        return await self.db.read(lambda c: _messages(c, conversation_pk, after_seq, through))

    async def load_conversation(self, tenant_id: str, conversation_id: str, full: bool) -> Loaded:
        async def run(c: Conn) -> Loaded:
            conv = await sql.resolve(c, tenant_id, conversation_id)
            if conv is None:
                return Loaded(None)
            checkpoint = await manage.latest_checkpoint(c, conv.pk) if conv.epoch else None
            after = 0 if full or checkpoint is None else checkpoint.covers_through_seq
            return Loaded(conv, checkpoint, await _messages(c, conv.pk, after, conv.last_seq))

        return await self.db.snapshot(run)

    async def latest_checkpoint(self, conversation_pk: int) -> Checkpoint | None:
        return await self.db.read(lambda c: manage.latest_checkpoint(c, conversation_pk))

    async def list_checkpoints(self, conversation_pk: int) -> list[Checkpoint]:
        async def run(c: Conn) -> list[Checkpoint]:
            rows = await c.fetch(
                f"SELECT {CKPT_COLS} FROM checkpoints WHERE conversation_pk = $1 ORDER BY epoch",
                conversation_pk,
            )
            return [checkpoint_row(tuple(r)) for r in rows]

        return await self.db.read(run)

    async def commit_checkpoint(self, conversation_pk: int, checkpoint: Checkpoint) -> Conversation:
        async def run(c: Conn) -> Conversation:
            conv = await sql.by_pk(c, conversation_pk, "FOR UPDATE")
            if conv.epoch != checkpoint.epoch - 1:
                raise ConflictError(
                    f"conversation is at epoch {conv.epoch}, not {checkpoint.epoch - 1}"
                )
            if max(checkpoint.covers_through_seq, checkpoint.prune_through_seq) > conv.last_seq:
                raise ConflictError("checkpoint covers messages that do not exist")
            await sql.insert_checkpoint(c, conversation_pk, checkpoint)
            await c.execute(
                "UPDATE conversations SET epoch = $2 WHERE pk = $1",
                conversation_pk,
                checkpoint.epoch,
            )
            return await sql.by_pk(c, conversation_pk)

        return await self.db.write(run)

    async def commit_turn(self, commit: TurnCommit) -> Conversation:
        return await self.db.write(lambda c: sql.commit_turn(c, commit, self.owner))

    async def record_turn(self, conversation_pk: int, turn: Turn) -> None:
        await self.db.read(
            lambda c: sql.insert_turn(c, conversation_pk, turn, (None, None), self.owner)
        )

    async def abandon_running_turns(self, error: dict[str, Any]) -> int:
        async def run(c: Conn) -> int:
            status = await c.execute(
                "UPDATE turns SET status = 'incomplete', error = $1, finished_at = $2 "
                "WHERE status = 'running' AND (owner IS NULL OR owner = $3)",
                dumps(error),
                time.time(),
                self.owner,
            )
            return rowcount(status)

        return await self.db.read(run)

    async def get_turn(self, tenant_id: str, conversation_id: str, turn_id: str) -> Turn | None:
        async def run(c: Conn) -> Turn | None:
            conv = await sql.resolve(c, tenant_id, conversation_id)
            if conv is None:
                return None
            row = await c.fetchrow(
                f"SELECT {TURN_COLS} FROM turns WHERE id = $1 AND conversation_pk = $2",
                turn_id,
                conv.pk,
            )
            return None if row is None else turn_row(tuple(row), conv.id)

        return await self.db.read(run)

    async def find_turn(self, tenant_id: str, turn_id: str) -> Turn | None:
        return await self.db.read(lambda c: manage.find_turn(c, tenant_id, turn_id))

    async def note_turn(self, tenant_id: str, turn_id: str, key: str, value: Any) -> bool:
        return await self.db.read(lambda c: manage.note_turn(c, tenant_id, turn_id, key, value))

    async def list_conversations(
        self,
        tenant_id: str,
        limit: int = 50,
        *,
        after: Conversation | None = None,
        filters: ConversationFilter | None = None,
    ) -> list[Conversation]:
        return await self.db.read(
            lambda c: manage.list_conversations(c, tenant_id, limit, after, filters)
        )

    async def update_conversation(
        self,
        conversation_pk: int,
        *,
        title: str | None = None,
        clear_title: bool = False,
        metadata: dict[str, str] | None = None,
        expected_last_seq: int | None = None,
    ) -> Conversation:
        return await self.db.write(
            lambda c: manage.update(
                c, conversation_pk, title, clear_title, metadata, expected_last_seq
            )
        )

    async def delete_conversation(self, conversation_pk: int) -> dict[str, int]:
        return await self.db.write(lambda c: manage.delete(c, conversation_pk))

    async def fork_conversation(
        self, tenant_id: str, conversation_pk: int, at_seq: int, new_id: str
    ) -> Conversation:
        return await self.db.write(
            lambda c: manage.fork(c, tenant_id, conversation_pk, at_seq, new_id)
        )

    async def remove_messages(self, conversation_pk: int, seqs: list[int], at: float) -> int:
        return await self.db.write(lambda c: manage.remove(c, conversation_pk, seqs, at))

    async def list_aliases(self, conversation_pk: int) -> list[str]:
        return await self.db.read(lambda c: manage.aliases(c, conversation_pk))

    async def list_turns(self, conversation_pk: int, limit: int = 100) -> list[Turn]:
        return await self.db.snapshot(lambda c: manage.turns(c, conversation_pk, limit))

    async def import_conversation(
        self, tenant_id: str, conversation: ImportedConversation
    ) -> Conversation | None:
        try:
            return await self.db.write(
                lambda c: manage.import_conversation(c, tenant_id, conversation)
            )
        except ConflictError:  # a concurrent import took its id or an alias first
            for name in (conversation.id, *conversation.aliases):
                if await self.resolve(tenant_id, name) is not None:
                    return None
            raise

    async def search(self, tenant_id: str, query: SearchQuery) -> list[SearchHit]:
        return await self.db.snapshot(lambda c: search.search(c, tenant_id, query))

    async def find_by_history(self, tenant_id: str, hashes: list[bytes]) -> list[Conversation]:
        hashes = list(dict.fromkeys(hashes))
        if not hashes:
            return []

        async def run(c: Conn) -> list[Conversation]:
            rows = await c.fetch(
                f"SELECT {CONV_COLS} FROM {CONV_FROM} WHERE c.tenant_id = $1 "
                "AND c.history_hash = ANY($2::bytea[])",
                tenant_id,
                hashes,
            )
            return [sql.conversation(r) for r in rows]

        return await self.db.read(run)

    async def add_alias(self, tenant_id: str, alias: str, conversation_pk: int) -> None:
        async def run(c: Conn) -> None:
            await c.execute(
                "INSERT INTO conversation_aliases (tenant_id, alias, conversation_pk, "
                "created_at) VALUES ($1, $2, $3, $4)",
                tenant_id,
                alias,
                conversation_pk,
                time.time(),
            )  # taken, or no such conversation: a unique or foreign key violation, a conflict

        await self.db.read(run)

    async def claim_idempotency(
        self, key: IdempotencyKey, retention: float
    ) -> IdempotencyRecord | None:
        return await self.db.write(lambda c: _claim(c, key, retention, self.owner))

    async def release_idempotency(self, key: IdempotencyKey) -> None:
        async def run(c: Conn) -> None:
            await c.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND route = $2 AND key = $3 "
                "AND status = 'running'",
                key.tenant_id,
                key.route,
                key.key,
            )

        await self.db.read(run)

    async def reap_idempotency(self, retention: float, running_too: bool = False) -> int:
        async def run(c: Conn) -> int:
            status = await c.execute(
                "DELETE FROM idempotency_keys WHERE created_at < $1 OR ($2 AND "
                "status = 'running' AND (owner IS NULL OR owner = $3))",
                time.time() - retention,
                running_too,
                self.owner,
            )
            return rowcount(status)

        return await self.db.read(run)

    async def record_tool_step(self, step: ToolStep) -> None:
        await self.db.read(lambda c: sql.insert_tool_step(c, step))

    async def list_tool_steps(self, turn_id: str) -> list[ToolStep]:
        return await self.db.read(lambda c: sql.tool_steps(c, turn_id))

    async def counts(self) -> dict[str, int]:
        async def run(c: Conn) -> dict[str, int]:
            row = await c.fetchrow(
                "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)
            )
            return {t: int(v) for t, v in zip(TABLES, tuple(row), strict=True)}

        return await self.db.snapshot(run)


async def _claim(
    c: Conn, key: IdempotencyKey, retention: float, owner: str
) -> IdempotencyRecord | None:
    """Claim the key (None), or what it holds. The insert waits for a concurrent claimer's
    transaction: exactly one of them inserts; the others read what it wrote (read committed:
    each statement sees the latest commits, so a claim released in between is tried again)."""
    now = time.time()
    ident = (key.tenant_id, key.route, key.key)
    where = "tenant_id = $1 AND route = $2 AND key = $3"
    await c.execute(f"DELETE FROM idempotency_keys WHERE {where} AND created_at < $4",
                    *ident, now - retention)  # fmt: skip
    for _ in range(3):
        claimed = await c.fetchval(
            "INSERT INTO idempotency_keys (tenant_id, route, key, request_hash, status, "
            "created_at, owner) VALUES ($1, $2, $3, $4, 'running', $5, $6) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            *ident,
            key.request_hash,
            now,
            owner,
        )
        if claimed:
            return None
        row = await c.fetchrow(
            "SELECT status, request_hash, stream, response, headers FROM idempotency_keys "
            f"WHERE {where}",
            *ident,
        )
        if row is not None:
            status, request_hash, stream, response, headers = row
            return IdempotencyRecord(status, request_hash, bool(stream), response, loads(headers))
    raise ConflictError("the idempotency key keeps changing hands; retry")
