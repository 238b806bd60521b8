"""SQLite store: the queries behind the `Store` protocol, each at most one transaction on the
database of `sqlite_db.py` (where writes and reads run, and how storage failures become errors).
A turn's read on a view-cache miss of up to INLINE_READ_MESSAGES messages runs on the event
loop's thread (~0.3 ms for 200); longer ones, and every other read, go to the reader pool.
"""

from __future__ import annotations

import sqlite3
import time
from importlib import resources
from typing import Any

from tether.model import Checkpoint, Conversation, Message, ToolStep, Turn
from tether.store import sqlite_keys as sql_keys
from tether.store import sqlite_manage as manage
from tether.store import sqlite_search
from tether.store import sqlite_sql as sql
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
from tether.store.errors import ConflictError
from tether.store.sqlite_backlog import Indexer
from tether.store.sqlite_db import Database, sqlite_path

INLINE_READ_MESSAGES = 500  # a turn's read of up to this many messages runs on the loop


class SqliteStore:
    def __init__(self, url: str, readers: int = 2, *, owner: str = "local") -> None:
        self.url = url
        self.owner = owner  # written on every turn and claim; the start-up sweeps take only these
        self.path = sqlite_path(url)
        self.db = Database(self.path, readers)
        self.indexer = Indexer(self.db)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        await self.indexer.stop()
        await self.db.close()

    def storage_problem(self) -> str | None:
        return self.db.storage_problem()

    # -- migrations -----------------------------------------------------------------------
    async def migrate(self) -> list[int]:
        files = sorted(
            (
                f
                for f in resources.files("tether.store.migrations.sqlite").iterdir()
                if f.name.endswith(".sql")
            ),
            key=lambda f: f.name,
        )

        def run(conn: sqlite3.Connection) -> list[int]:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            applied = []
            for f in files:
                version = int(f.name.split("_", 1)[0])
                if version in done:
                    continue
                for statement in f.read_text().split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, f.name, time.time())
                )
                applied.append(version)
            return applied

        applied = await self.db.write(run)
        self.indexer.start()  # the search backlog's table exists now
        return applied

    # -- tenants and keys -----------------------------------------------------------------
    async def ensure_tenant(self, tenant_id: str) -> None:
        await self.db.write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)",
                (tenant_id, time.time()),
            )
        )

    async def add_api_key(self, tenant_id: str, key_hash: str, prefix: str) -> None:
        await self.db.write(lambda c: sql_keys.add(c, tenant_id, key_hash, prefix))

    async def revoke_api_key(self, prefix: str, key_hash: str | None = None) -> int:
        return await self.db.write(lambda c: sql_keys.revoke(c, prefix, key_hash))

    async def tenant_for_key(self, key_hash: str) -> str | None:
        return await self.db.read(lambda c: sql_keys.tenant_for(c, key_hash))

    async def list_api_keys(self) -> list[ApiKeyRow]:
        return await self.db.read(sql_keys.listed)

    async def count_api_keys(self) -> int:
        return await self.db.read(sql_keys.count)

    # -- conversations --------------------------------------------------------------------
    async def resolve(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        return await self.db.read(lambda c: sql.resolve(c, tenant_id, conversation_id))

    async def load_messages(
        self, conversation_pk: int, after_seq: int = 0, through_seq: int | None = None
    ) -> list[Message]:
        through = 2**62 if through_seq is None else through_seq

        def run(c: sqlite3.Connection) -> list[Message]:
            rows = c.execute(
                f"SELECT {sql.MSG_COLS} FROM messages WHERE conversation_pk = ? AND seq > ? "
                "AND seq <= ? ORDER BY seq",
                (conversation_pk, after_seq, through),
            ).fetchall()
            return [sql.message_row(r) for r in rows]

        return await self.db.read(run)

    async def load_conversation(self, tenant_id: str, conversation_id: str, full: bool) -> Loaded:
        def run(c: sqlite3.Connection, limit: int | None = None) -> Loaded | None:
            conv = sql.resolve(c, tenant_id, conversation_id)
            if conv is None:
                return Loaded(None)
            checkpoint = None
            if conv.epoch:
                row = c.execute(
                    f"SELECT {sql.CKPT_COLS} FROM checkpoints WHERE conversation_pk = ? "
                    "ORDER BY epoch DESC LIMIT 1",
                    (conv.pk,),
                ).fetchone()
                checkpoint = sql.checkpoint_row(row) if row else None
            after = 0 if full or checkpoint is None else checkpoint.covers_through_seq
            if limit is not None and conv.last_seq - after > limit:
                return None  # too long to read on the event loop
            rows = c.execute(
                f"SELECT {sql.MSG_COLS} FROM messages WHERE conversation_pk = ? AND seq > ? "
                "ORDER BY seq",
                (conv.pk, after),
            ).fetchall()
            return Loaded(conv, checkpoint, [sql.message_row(r) for r in rows])

        inline = self.db.read_inline(lambda c: run(c, INLINE_READ_MESSAGES))
        if inline is not None:
            return inline
        loaded = await self.db.read(run)
        assert loaded is not None
        return loaded

    async def latest_checkpoint(self, conversation_pk: int) -> Checkpoint | None:
        def run(c: sqlite3.Connection) -> Checkpoint | None:
            row = c.execute(
                f"SELECT {sql.CKPT_COLS} FROM checkpoints WHERE conversation_pk = ? "
                "ORDER BY epoch DESC LIMIT 1",
                (conversation_pk,),
            ).fetchone()
            return None if row is None else sql.checkpoint_row(row)

        return await self.db.read(run)

    async def list_checkpoints(self, conversation_pk: int) -> list[Checkpoint]:
        def run(c: sqlite3.Connection) -> list[Checkpoint]:
            rows = c.execute(
                f"SELECT {sql.CKPT_COLS} FROM checkpoints WHERE conversation_pk = ? ORDER BY epoch",
                (conversation_pk,),
            ).fetchall()
            return [sql.checkpoint_row(r) for r in rows]

        return await self.db.read(run)

    async def commit_checkpoint(self, conversation_pk: int, checkpoint: Checkpoint) -> Conversation:
        def run(c: sqlite3.Connection) -> Conversation:
            row = c.execute(
                "SELECT epoch, last_seq FROM conversations WHERE pk = ?", (conversation_pk,)
            ).fetchone()
            if row is None:
                raise ConflictError(f"conversation {conversation_pk} does not exist")
            epoch, last_seq = row
            if epoch != checkpoint.epoch - 1:
                raise ConflictError(f"conversation is at epoch {epoch}, not {checkpoint.epoch - 1}")
            if max(checkpoint.covers_through_seq, checkpoint.prune_through_seq) > last_seq:
                raise ConflictError("checkpoint covers messages that do not exist")
            sql.insert_checkpoint(c, conversation_pk, checkpoint)
            c.execute(
                "UPDATE conversations SET epoch = ? WHERE pk = ?",
                (checkpoint.epoch, conversation_pk),
            )
            row = c.execute(
                f"SELECT {sql.CONV_COLS} FROM {sql.CONV_FROM} WHERE c.pk = ?", (conversation_pk,)
            ).fetchone()
            return sql.conversation_row(row)

        return await self.db.write(run)

    async def commit_turn(self, commit: TurnCommit) -> Conversation:
        return await self.db.write(lambda c: sql.commit_turn(c, commit, self.owner))

    async def record_turn(self, conversation_pk: int, turn: Turn) -> None:
        await self.db.write(
            lambda c: sql.insert_turn(c, conversation_pk, turn, None, None, self.owner)
        )

    async def abandon_running_turns(self, error: dict[str, Any]) -> int:
        def run(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "UPDATE turns SET status = 'incomplete', error = ?, finished_at = ? "
                "WHERE status = 'running' AND (owner IS NULL OR owner = ?)",
                (sql.dumps(error), time.time(), self.owner),
            )
            return cur.rowcount

        return await self.db.write(run)

    async def get_turn(self, tenant_id: str, conversation_id: str, turn_id: str) -> Turn | None:
        def run(c: sqlite3.Connection) -> Turn | None:
            conv = sql.resolve(c, tenant_id, conversation_id)
            if conv is None:
                return None
            row = c.execute(
                f"SELECT {sql.TURN_COLS} FROM turns WHERE id = ? AND conversation_pk = ?",
                (turn_id, conv.pk),
            ).fetchone()
            return None if row is None else sql.turn_row(row, conv.id)

        return await self.db.read(run)

    async def find_turn(self, tenant_id: str, turn_id: str) -> Turn | None:
        return await self.db.read(lambda c: manage.find_turn(c, tenant_id, turn_id))

    async def note_turn(self, tenant_id: str, turn_id: str, key: str, value: Any) -> bool:
        return await self.db.write(lambda c: manage.note_turn(c, tenant_id, turn_id, key, value))

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
        removed = await self.db.write(lambda c: manage.delete(c, conversation_pk))
        await self.db.write(sqlite_search.rewrite)  # its own transaction: the delete is done
        await self.db.truncate_wal()
        return removed

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
        return await self.db.read(lambda c: manage.turns(c, conversation_pk, limit))

    async def import_conversation(
        self, tenant_id: str, conversation: ImportedConversation
    ) -> Conversation | None:
        return await self.db.write(lambda c: manage.import_conversation(c, tenant_id, conversation))

    async def search(self, tenant_id: str, query: SearchQuery) -> list[SearchHit]:
        await self.indexer.flush()  # every committed message is searchable
        return await self.db.read(lambda c: sqlite_search.search(c, tenant_id, query))

    async def find_by_history(self, tenant_id: str, hashes: list[bytes]) -> list[Conversation]:
        hashes = list(dict.fromkeys(hashes))  # a hash twice, in two chunks, found one twice
        if not hashes:
            return []

        def run(c: sqlite3.Connection) -> list[Conversation]:
            found: list[Conversation] = []
            for start in range(0, len(hashes), 500):  # SQLite's bound-parameter limit
                part = hashes[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = c.execute(
                    f"SELECT {sql.CONV_COLS} FROM {sql.CONV_FROM} WHERE c.tenant_id = ? "
                    f"AND c.history_hash IN ({marks})",
                    (tenant_id, *part),
                ).fetchall()
                found.extend(sql.conversation_row(r) for r in rows)
            return found

        return await self.db.read(run)

    async def add_alias(self, tenant_id: str, alias: str, conversation_pk: int) -> None:
        def run(c: sqlite3.Connection) -> None:
            try:
                c.execute(
                    "INSERT INTO conversation_aliases (tenant_id, alias, conversation_pk, "
                    "created_at) VALUES (?, ?, ?, ?)",
                    (tenant_id, alias, conversation_pk, time.time()),
                )
            except sqlite3.IntegrityError as exc:  # the alias is taken, or no such conversation
                raise ConflictError(f"cannot add alias {alias!r}: {exc}") from exc

        await self.db.write(run)

    async def claim_idempotency(
        self, key: IdempotencyKey, retention: float
    ) -> IdempotencyRecord | None:
        def run(c: sqlite3.Connection) -> IdempotencyRecord | None:
            now = time.time()
            where = "tenant_id = ? AND route = ? AND key = ?"
            ident = (key.tenant_id, key.route, key.key)
            c.execute(f"DELETE FROM idempotency_keys WHERE {where} AND created_at < ?",
                      (*ident, now - retention))  # fmt: skip
            row = c.execute(
                "SELECT status, request_hash, stream, response, headers FROM idempotency_keys "
                f"WHERE {where}",
                ident,
            ).fetchone()
            if row is not None:
                status, request_hash, stream, response, headers = row
                return IdempotencyRecord(
                    status, request_hash, bool(stream), response, sql.loads(headers)
                )
            c.execute(
                "INSERT INTO idempotency_keys (tenant_id, route, key, request_hash, status, "
                "created_at, owner) VALUES (?, ?, ?, ?, 'running', ?, ?)",
                (*ident, key.request_hash, now, self.owner),
            )
            return None

        return await self.db.write(run)

    async def release_idempotency(self, key: IdempotencyKey) -> None:
        await self.db.write(
            lambda c: c.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = ? AND route = ? AND key = ? "
                "AND status = 'running'",
                (key.tenant_id, key.route, key.key),
            )
        )

    async def reap_idempotency(self, retention: float, running_too: bool = False) -> int:
        def run(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ? OR (? AND status = 'running' "
                "AND (owner IS NULL OR owner = ?))",
                (time.time() - retention, int(running_too), self.owner),
            )
            return int(cur.rowcount)

        return await self.db.write(run)

    async def record_tool_step(self, step: ToolStep) -> None:
        await self.db.write(lambda c: sql.insert_tool_step(c, step))

    async def list_tool_steps(self, turn_id: str) -> list[ToolStep]:
        return await self.db.read(lambda c: sql.tool_steps(c, turn_id))

    async def counts(self) -> dict[str, int]:
        tables: tuple[str, ...] = ("tenants", "api_keys", "conversations", "turns")
        tables += ("conversation_aliases", "messages", "checkpoints", "idempotency_keys")
        tables += ("tool_steps",)

        def run(c: sqlite3.Connection) -> dict[str, int]:
            return {t: int(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}

        return await self.db.read(run)
