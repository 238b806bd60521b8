"""SQLite store: stdlib `sqlite3` in WAL mode, one writer thread and a small reader pool.

Each public method is one hop to a thread and at most one transaction. Writes run on the single
writer thread and start with `BEGIN IMMEDIATE`, so they never fail half-way on a lock upgrade.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import orjson

from tether.store.base import (
    Checkpoint,
    ConflictError,
    Conversation,
    Message,
    TurnCommit,
    TurnRecord,
    TurnRow,
)

T = TypeVar("T")

_CONV_COLS = (
    "c.pk, c.id, c.tenant_id, c.title, c.model, c.system_prompt, c.last_seq, c.turn_count, "
    "c.epoch, c.usage_prompt_tokens, c.usage_through_seq, c.usage_epoch, p.id, "
    "c.forked_from_seq, c.created_at, c.updated_at"
)
_CONV_FROM = "conversations c LEFT JOIN conversations p ON p.pk = c.forked_from_pk"
_MSG_COLS = "seq, role, content, tool_calls, tool_call_id, name, extra, tokens, turn_id, created_at"


_CKPT_COLS = (
    "epoch, covers_through_seq, prune_through_seq, summary, ledger, tokens_before, tokens_after, "
    "model, prompt_version, stats, turn_id, created_at"
)


def _checkpoint(row: tuple[Any, ...]) -> Checkpoint:
    epoch, covers, prune, summary, ledger, before, after, model, version, stats, turn, at = row
    return Checkpoint(
        epoch,
        covers,
        prune,
        summary,
        _loads(ledger) or [],
        before,
        after,
        model,
        version,
        _loads(stats) or {},
        turn,
        at,
    )


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _conversation(row: tuple[Any, ...]) -> Conversation:
    return Conversation(*row)


def _message(row: tuple[Any, ...]) -> Message:
    seq, role, content, tool_calls, tool_call_id, name, extra, tokens, turn_id, created = row
    return Message(
        role=role,
        content=_loads(content),
        tool_calls=_loads(tool_calls),
        tool_call_id=tool_call_id,
        name=name,
        extra=_loads(extra),
        tokens=tokens,
        seq=seq,
        turn_id=turn_id,
        created_at=created,
    )


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/path.db` or `sqlite:////abs/path.db` → Path."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url[len("sqlite:///") :])


class SqliteStore:
    def __init__(self, url: str, readers: int = 2) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="tether-sqlite-w")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="tether-sqlite-r")
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._conn()))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, run)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        def close_all() -> None:
            with self._lock:
                for conn in self._connections:
                    conn.close()
                self._connections.clear()

        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        close_all()

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

        return await self._write(run)

    # -- tenants and keys -----------------------------------------------------------------
    async def ensure_tenant(self, tenant_id: str) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)",
                (tenant_id, time.time()),
            )
        )

    async def add_api_key(self, tenant_id: str, key_hash: str, prefix: str) -> None:
        def run(c: sqlite3.Connection) -> None:
            now = time.time()
            c.execute(
                "INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)", (tenant_id, now)
            )
            c.execute(
                "INSERT INTO api_keys (tenant_id, key_hash, prefix, created_at) VALUES (?,?,?,?)",
                (tenant_id, key_hash, prefix, now),
            )

        await self._write(run)

    async def tenant_for_key(self, key_hash: str) -> str | None:
        def run(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                "SELECT tenant_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._read(run)

    async def count_api_keys(self) -> int:
        def run(c: sqlite3.Connection) -> int:
            return int(
                c.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()[0]
            )

        return await self._read(run)

    # -- conversations --------------------------------------------------------------------
    async def resolve(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        return await self._read(lambda c: _resolve(c, tenant_id, conversation_id))

    async def load_messages(
        self, conversation_pk: int, after_seq: int = 0, through_seq: int | None = None
    ) -> list[Message]:
        through = 2**62 if through_seq is None else through_seq

        def run(c: sqlite3.Connection) -> list[Message]:
            rows = c.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE conversation_pk = ? AND seq > ? "
                "AND seq <= ? ORDER BY seq",
                (conversation_pk, after_seq, through),
            ).fetchall()
            return [_message(r) for r in rows]

        return await self._read(run)

    async def latest_checkpoint(self, conversation_pk: int) -> Checkpoint | None:
        def run(c: sqlite3.Connection) -> Checkpoint | None:
            row = c.execute(
                f"SELECT {_CKPT_COLS} FROM checkpoints WHERE conversation_pk = ? "
                "ORDER BY epoch DESC LIMIT 1",
                (conversation_pk,),
            ).fetchone()
            return None if row is None else _checkpoint(row)

        return await self._read(run)

    async def list_checkpoints(self, conversation_pk: int) -> list[Checkpoint]:
        def run(c: sqlite3.Connection) -> list[Checkpoint]:
            rows = c.execute(
                f"SELECT {_CKPT_COLS} FROM checkpoints WHERE conversation_pk = ? ORDER BY epoch",
                (conversation_pk,),
            ).fetchall()
            return [_checkpoint(r) for r in rows]

        return await self._read(run)

    async def commit_checkpoint(self, conversation_pk: int, checkpoint: Checkpoint) -> Conversation:
        def run(c: sqlite3.Connection) -> Conversation:
            epoch, last_seq = c.execute(
                "SELECT epoch, last_seq FROM conversations WHERE pk = ?", (conversation_pk,)
            ).fetchone()
            if epoch != checkpoint.epoch - 1:
                raise ConflictError(f"conversation is at epoch {epoch}, not {checkpoint.epoch - 1}")
            if max(checkpoint.covers_through_seq, checkpoint.prune_through_seq) > last_seq:
                raise ConflictError("checkpoint covers messages that do not exist")
            _insert_checkpoint(c, conversation_pk, checkpoint)
            c.execute(
                "UPDATE conversations SET epoch = ? WHERE pk = ?",
                (checkpoint.epoch, conversation_pk),
            )
            row = c.execute(
                f"SELECT {_CONV_COLS} FROM {_CONV_FROM} WHERE c.pk = ?", (conversation_pk,)
            ).fetchone()
            return _conversation(row)

        return await self._write(run)

    async def commit_turn(self, commit: TurnCommit) -> Conversation:
        return await self._write(lambda c: _commit_turn(c, commit))

    async def record_failed_turn(self, conversation_pk: int, turn: TurnRecord) -> None:
        await self._write(lambda c: _insert_turn(c, conversation_pk, turn, None, None))

    async def get_turn(self, tenant_id: str, conversation_id: str, turn_id: str) -> TurnRow | None:
        def run(c: sqlite3.Connection) -> TurnRow | None:
            conv = _resolve(c, tenant_id, conversation_id)
            if conv is None:
                return None
            row = c.execute(
                "SELECT id, status, model, usage, error, started_at, finished_at FROM turns "
                "WHERE id = ? AND conversation_pk = ?",
                (turn_id, conv.pk),
            ).fetchone()
            if row is None:
                return None
            return TurnRow(
                row[0], conv.id, row[1], row[2], _loads(row[3]), _loads(row[4]), row[5], row[6]
            )

        return await self._read(run)

    async def list_conversations(self, tenant_id: str, limit: int = 50) -> list[Conversation]:
        def run(c: sqlite3.Connection) -> list[Conversation]:
            rows = c.execute(
                f"SELECT {_CONV_COLS} FROM {_CONV_FROM} WHERE c.tenant_id = ? "
                "ORDER BY c.updated_at DESC LIMIT ?",
                (tenant_id, limit),
            ).fetchall()
            return [_conversation(r) for r in rows]

        return await self._read(run)

    async def add_alias(self, tenant_id: str, alias: str, conversation_pk: int) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT INTO conversation_aliases (tenant_id, alias, conversation_pk, created_at) "
                "VALUES (?, ?, ?, ?)",
                (tenant_id, alias, conversation_pk, time.time()),
            )
        )

    async def counts(self) -> dict[str, int]:
        tables = (
            "tenants",
            "api_keys",
            "conversations",
            "conversation_aliases",
            "turns",
            "messages",
            "checkpoints",
        )

        def run(c: sqlite3.Connection) -> dict[str, int]:
            return {t: int(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}

        return await self._read(run)


def _resolve(c: sqlite3.Connection, tenant_id: str, conversation_id: str) -> Conversation | None:
    row = c.execute(
        f"SELECT {_CONV_COLS} FROM {_CONV_FROM} WHERE c.tenant_id = ? AND c.id = ?",
        (tenant_id, conversation_id),
    ).fetchone()
    if row is None:
        row = c.execute(
            f"SELECT {_CONV_COLS} FROM conversation_aliases a "
            "JOIN conversations c ON c.pk = a.conversation_pk "
            "LEFT JOIN conversations p ON p.pk = c.forked_from_pk "
            "WHERE a.tenant_id = ? AND a.alias = ?",
            (tenant_id, conversation_id),
        ).fetchone()
    return None if row is None else _conversation(row)


def _insert_checkpoint(c: sqlite3.Connection, conversation_pk: int, cp: Checkpoint) -> None:
    c.execute(
        f"INSERT INTO checkpoints (conversation_pk, {_CKPT_COLS}) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            conversation_pk,
            cp.epoch,
            cp.covers_through_seq,
            cp.prune_through_seq,
            cp.summary,
            _dumps(cp.ledger),
            cp.tokens_before,
            cp.tokens_after,
            cp.model,
            cp.prompt_version,
            _dumps(cp.stats),
            cp.turn_id,
            cp.created_at or time.time(),
        ),
    )


def _insert_turn(
    c: sqlite3.Connection,
    conversation_pk: int,
    turn: TurnRecord,
    first_seq: int | None,
    last_seq: int | None,
) -> None:
    usage = turn.usage or {}
    c.execute(
        "INSERT INTO turns (id, conversation_pk, status, model, stream, prompt_tokens, "
        "completion_tokens, usage, error, first_seq, last_seq, compacted, notes, started_at, "
        "first_token_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            turn.id,
            conversation_pk,
            turn.status,
            turn.model,
            int(turn.stream),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            _dumps(turn.usage),
            _dumps(turn.error),
            first_seq,
            last_seq,
            int(turn.compacted),
            _dumps(turn.notes),
            turn.started_at,
            turn.first_token_at,
            turn.finished_at,
        ),
    )


def _commit_turn(c: sqlite3.Connection, commit: TurnCommit) -> Conversation:
    now = time.time()
    new = commit.new_conversation
    if new is not None:
        c.execute(
            "INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)", (commit.tenant_id, now)
        )
        try:
            cur = c.execute(
                "INSERT INTO conversations (tenant_id, id, title, model, system_prompt, "
                "forked_from_pk, forked_from_seq, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    commit.tenant_id,
                    new.id,
                    new.title,
                    new.model,
                    commit.system_prompt,
                    new.forked_from_pk,
                    new.forked_from_seq,
                    now,
                    now,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"conversation {new.id!r} already exists") from exc
        pk = int(cur.lastrowid or 0)
        last_seq = 0
        if new.forked_from_pk is not None and new.forked_from_seq:
            c.execute(
                f"INSERT INTO messages (conversation_pk, {_MSG_COLS}) "
                f"SELECT ?, {_MSG_COLS} FROM messages WHERE conversation_pk = ? AND seq <= ?",
                (pk, new.forked_from_pk, new.forked_from_seq),
            )
            last_seq = new.forked_from_seq
        if commit.inherit_checkpoint is not None:
            _insert_checkpoint(c, pk, replace(commit.inherit_checkpoint, epoch=1))
            c.execute("UPDATE conversations SET epoch = 1 WHERE pk = ?", (pk,))
    else:
        assert commit.conversation_pk is not None
        pk = commit.conversation_pk
        row = c.execute("SELECT last_seq FROM conversations WHERE pk = ?", (pk,)).fetchone()
        last_seq = int(row[0])
        if last_seq != commit.expected_last_seq:
            raise ConflictError(
                f"conversation moved on: last seq {last_seq}, expected {commit.expected_last_seq}"
            )
    first_seq = last_seq + 1
    rows = []
    for offset, m in enumerate(commit.messages):
        rows.append(
            (
                pk,
                first_seq + offset,
                m.role,
                _dumps(m.content),
                _dumps(m.tool_calls),
                m.tool_call_id,
                m.name,
                _dumps(m.extra),
                m.tokens,
                commit.turn.id,
                now,
            )
        )
    c.executemany(
        f"INSERT INTO messages (conversation_pk, {_MSG_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    new_last = last_seq + len(rows)
    if commit.system_changed and new is None:
        c.execute(
            "UPDATE conversations SET system_prompt = ? WHERE pk = ?", (commit.system_prompt, pk)
        )
    prompt_tokens = (commit.turn.usage or {}).get("prompt_tokens")
    c.execute(
        "UPDATE conversations SET last_seq = ?, turn_count = turn_count + 1, updated_at = ?, "
        "model = COALESCE(?, model), usage_prompt_tokens = ?, usage_through_seq = ?, "
        "usage_epoch = ? WHERE pk = ?",
        (
            new_last,
            now,
            commit.turn.model,
            prompt_tokens if isinstance(prompt_tokens, int) else None,
            new_last - 1,
            commit.view_epoch,
            pk,
        ),
    )
    _insert_turn(c, pk, commit.turn, first_seq if rows else None, new_last if rows else None)
    row = c.execute(f"SELECT {_CONV_COLS} FROM {_CONV_FROM} WHERE c.pk = ?", (pk,)).fetchone()
    return _conversation(row)
