"""SQLite store: stdlib `sqlite3` in WAL mode, writes on the event loop's thread, a writer thread
to fall back on, and a small reader pool.

Each public method is at most one transaction. Writes start with `BEGIN IMMEDIATE`, so they never
fail half-way on a lock upgrade. A write runs at once on the event loop's thread, on a
connection that never waits for a lock (busy_timeout 0): a turn's commit is ~0.1 ms of SQLite,
and handing it to a thread cost more than that (0.3–0.45 ms of latency per turn and 15–25% of
the server's CPU at c=1, measured with `bench.profile`). If the database is locked (another
process, or a fall-back write in progress) the write goes to the writer thread, which waits up
to 5 s. The loop's connection never checkpoints the WAL itself: every CHECKPOINT_EVERY writes
the writer thread runs a passive checkpoint, so the fsync it costs is never on the loop.
A turn's read (on a view-cache miss) of up to INLINE_READ_MESSAGES messages runs on the loop's
thread too (~0.3 ms for 200); longer ones, and every other read, go to the reader pool.
A full disk (SQLITE_FULL) becomes 507 `insufficient_storage`; a read-only, locked or failing
database becomes 503 `storage_unavailable` with Retry-After. Either way the transaction is rolled
back whole, and the next write works once the cause is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import IO, Any, TypeVar

import structlog

from tether.errors import TetherError
from tether.store import sqlite_sql as sql
from tether.store.base import (
    Checkpoint,
    ConflictError,
    Conversation,
    IdempotencyKey,
    IdempotencyRecord,
    Loaded,
    Message,
    TurnCommit,
    TurnRecord,
    TurnRow,
)

T = TypeVar("T")
log = structlog.get_logger("tether.store")
CHECKPOINT_EVERY = 500  # writes on the loop's connection between passive WAL checkpoints
INLINE_READ_MESSAGES = 500  # a turn's read of up to this many messages runs on the loop

# primary result codes meaning "the database cannot be used right now" (not a bug of ours)
_UNAVAILABLE = frozenset(
    {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY}
)


def storage_error(exc: sqlite3.Error) -> TetherError | None:
    """The client-facing error for a storage failure, or None for any other SQLite error."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    name = getattr(exc, "sqlite_errorname", str(code))
    if code & 0xFF == sqlite3.SQLITE_FULL:
        log.error("store.disk_full", error=str(exc), code=name)
        return TetherError(
            507,
            "insufficient_storage",
            "the server's database disk is full: nothing of this request was stored; "
            "retry once space has been freed",
        )
    if code & 0xFF in _UNAVAILABLE:
        log.error("store.unavailable", error=str(exc), code=name)
        return TetherError(
            503,
            "storage_unavailable",
            f"the server's database cannot be used right now ({name}): nothing of this request "
            "was stored; retry later",
            headers={"Retry-After": "5"},
        )
    return None


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/path.db` or `sqlite:////abs/path.db` → Path."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url[len("sqlite:///") :])


def claim_single_server(url: str) -> IO[bytes]:
    """Take the file lock that lets one `tether serve` at a time use this SQLite file (turns
    are serialised per conversation in-process). Kept for the life of the returned file."""
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{path}.lock", "wb")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(
            f"another `tether serve` is already using {path}: SQLite serves one process "
            "(stop the other one, or use another database file)"
        ) from None
    return handle


class _Locked(Exception):
    """BEGIN IMMEDIATE found the database locked (SQLITE_BUSY)."""

    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


class SqliteStore:
    def __init__(self, url: str, readers: int = 2) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="tether-sqlite-w")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="tether-sqlite-r")
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None  # the event loop thread's writer
        self._inline_thread: int | None = None
        self._inline_writes = 0

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
        def run() -> T:
            try:
                return fn(self._conn())
            except sqlite3.Error as exc:
                mapped = storage_error(exc)
                if mapped is None:
                    raise
                raise mapped from exc

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, run)

    def _read_inline(self, fn: Callable[[sqlite3.Connection], T | None]) -> T | None:
        """Run a short read on the event loop's thread, in one read transaction; None if `fn`
        declines (too much to read there), if this is not the loop's thread, or if the
        database is busy: the caller then reads on the reader pool."""
        try:
            conn = self._loop_conn()
            if conn is None:
                return None
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY:
                return None
            mapped = storage_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def _loop_conn(self) -> sqlite3.Connection | None:
        """The connection for writes on the event loop's thread (None on any other thread)."""
        if self._inline is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=0")  # never wait on the loop: fall back instead
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer thread checkpoints
            self._inline, self._inline_thread = conn, threading.get_ident()
            with self._lock:
                self._connections.append(conn)
        return self._inline if self._inline_thread == threading.get_ident() else None

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY:
                    raise _Locked(exc) from exc
                raise
            try:
                result = fn(conn)
                conn.execute("COMMIT")  # where a full disk shows, in WAL mode
            except BaseException:
                if conn.in_transaction:  # SQLITE_FULL / IOERR may have rolled it back
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as exc:
            mapped = storage_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._loop_conn()
        except sqlite3.Error as exc:
            mapped = storage_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        if conn is not None:
            try:
                result = self._transaction(conn, fn)
            except _Locked:
                pass  # someone else is writing: wait for the lock on the writer thread
            else:
                self._inline_writes += 1
                if self._inline_writes % CHECKPOINT_EVERY == 0:
                    self._writer.submit(self._checkpoint)
                return result

        def run() -> T:
            try:
                return self._transaction(self._conn(), fn)
            except _Locked as exc:  # locked for longer than the busy timeout
                mapped = storage_error(exc.error)
                assert mapped is not None  # SQLITE_BUSY maps to 503 storage_unavailable
                raise mapped from exc.error

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, run)

    def _checkpoint(self) -> None:
        try:
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("store.checkpoint_failed", error=str(exc))

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
        self._inline = self._inline_thread = None

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

    async def revoke_api_key(self, prefix: str, key_hash: str | None = None) -> int:
        def run(c: sqlite3.Connection) -> int:
            matches = int(
                c.execute(
                    "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL AND prefix = ? "
                    "AND (? IS NULL OR key_hash = ?)",
                    (prefix, key_hash, key_hash),
                ).fetchone()[0]
            )
            if matches == 1:
                c.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL AND prefix = ? "
                    "AND (? IS NULL OR key_hash = ?)",
                    (time.time(), prefix, key_hash, key_hash),
                )
            return matches

        return await self._write(run)

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
            # revoked keys count: revoking every key must not turn authentication off
            return int(c.execute("SELECT count(*) FROM api_keys").fetchone()[0])

        return await self._read(run)

    # -- conversations --------------------------------------------------------------------
    async def resolve(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        return await self._read(lambda c: sql.resolve(c, tenant_id, conversation_id))

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

        return await self._read(run)

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

        inline = self._read_inline(lambda c: run(c, INLINE_READ_MESSAGES))
        if inline is not None:
            return inline
        loaded = await self._read(run)
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

        return await self._read(run)

    async def list_checkpoints(self, conversation_pk: int) -> list[Checkpoint]:
        def run(c: sqlite3.Connection) -> list[Checkpoint]:
            rows = c.execute(
                f"SELECT {sql.CKPT_COLS} FROM checkpoints WHERE conversation_pk = ? ORDER BY epoch",
                (conversation_pk,),
            ).fetchall()
            return [sql.checkpoint_row(r) for r in rows]

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
            sql.insert_checkpoint(c, conversation_pk, checkpoint)
            c.execute(
                "UPDATE conversations SET epoch = ? WHERE pk = ?",
                (checkpoint.epoch, conversation_pk),
            )
            row = c.execute(
                f"SELECT {sql.CONV_COLS} FROM {sql.CONV_FROM} WHERE c.pk = ?", (conversation_pk,)
            ).fetchone()
            return sql.conversation_row(row)

        return await self._write(run)

    async def commit_turn(self, commit: TurnCommit) -> Conversation:
        return await self._write(lambda c: sql.commit_turn(c, commit))

    async def record_turn(self, conversation_pk: int, turn: TurnRecord) -> None:
        await self._write(lambda c: sql.insert_turn(c, conversation_pk, turn, None, None))

    async def abandon_running_turns(self, error: dict[str, Any]) -> int:
        def run(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "UPDATE turns SET status = 'incomplete', error = ?, finished_at = ? "
                "WHERE status = 'running'",
                (sql.dumps(error), time.time()),
            )
            return cur.rowcount

        return await self._write(run)

    async def get_turn(self, tenant_id: str, conversation_id: str, turn_id: str) -> TurnRow | None:
        def run(c: sqlite3.Connection) -> TurnRow | None:
            conv = sql.resolve(c, tenant_id, conversation_id)
            if conv is None:
                return None
            row = c.execute(
                "SELECT id, status, model, usage, error, started_at, finished_at, first_seq, "
                "last_seq FROM turns WHERE id = ? AND conversation_pk = ?",
                (turn_id, conv.pk),
            ).fetchone()
            if row is None:
                return None
            return TurnRow(
                row[0],
                conv.id,
                row[1],
                row[2],
                sql.loads(row[3]),
                sql.loads(row[4]),
                row[5],
                row[6],
                row[7],
                row[8],
            )

        return await self._read(run)

    async def list_conversations(self, tenant_id: str, limit: int = 50) -> list[Conversation]:
        def run(c: sqlite3.Connection) -> list[Conversation]:
            rows = c.execute(
                f"SELECT {sql.CONV_COLS} FROM {sql.CONV_FROM} WHERE c.tenant_id = ? "
                "ORDER BY c.updated_at DESC LIMIT ?",
                (tenant_id, limit),
            ).fetchall()
            return [sql.conversation_row(r) for r in rows]

        return await self._read(run)

    async def add_alias(self, tenant_id: str, alias: str, conversation_pk: int) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT INTO conversation_aliases (tenant_id, alias, conversation_pk, created_at) "
                "VALUES (?, ?, ?, ?)",
                (tenant_id, alias, conversation_pk, time.time()),
            )
        )

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
                "created_at) VALUES (?, ?, ?, ?, 'running', ?)",
                (*ident, key.request_hash, now),
            )
            return None

        return await self._write(run)

    async def release_idempotency(self, key: IdempotencyKey) -> None:
        await self._write(
            lambda c: c.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = ? AND route = ? AND key = ? "
                "AND status = 'running'",
                (key.tenant_id, key.route, key.key),
            )
        )

    async def reap_idempotency(self, retention: float, running_too: bool = False) -> int:
        def run(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ? OR (? AND status = 'running')",
                (time.time() - retention, int(running_too)),
            )
            return int(cur.rowcount)

        return await self._write(run)

    async def counts(self) -> dict[str, int]:
        tables = (
            "tenants",
            "api_keys",
            "conversations",
            "conversation_aliases",
            "turns",
            "messages",
            "checkpoints",
            "idempotency_keys",
        )

        def run(c: sqlite3.Connection) -> dict[str, int]:
            return {t: int(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}

        return await self._read(run)
