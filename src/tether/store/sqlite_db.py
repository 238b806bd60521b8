"""The SQLite database under the store: connections, transactions, and where each runs.

stdlib `sqlite3` in WAL mode. Every write transaction starts with `BEGIN IMMEDIATE`, so it never
fails half-way on a lock upgrade. A write runs at once on the event loop's thread, on a
connection that never waits for a lock (busy_timeout 0): a turn's commit is ~0.1 ms of SQLite,
and handing it to a thread cost more than that (0.3–0.45 ms of latency per turn and 15–25% of
the server's CPU at c=1, measured with `bench.profile`). If the database is locked (another
process, or a fall-back write in progress) the write goes to the writer thread, which waits up
to 5 s. The loop's connection never checkpoints the WAL itself: every CHECKPOINT_EVERY writes
the writer thread runs a passive checkpoint, so the fsync it costs is never on the loop. Short
reads may run on the loop's thread too (`read_inline`); the rest go to a small reader pool.

A full disk (SQLITE_FULL) raises StorageFull; a read-only, locked or failing database raises
StorageUnavailable (store/errors.py; the API answers them 507 `insufficient_storage` and 503
`storage_unavailable`). Either way the transaction is rolled back whole, and the next write works
once the cause is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import structlog

from tether import metrics
from tether.store.errors import StorageFull, StorageUnavailable, StoreError
from tether.store.sqlite_files import Files, check_schema_version, sqlite_path

__all__ = ["Database", "sqlite_path", "storage_error", "storage_errors"]

T = TypeVar("T")
log = structlog.get_logger("tether.store")
CHECKPOINT_EVERY = 500  # writes on the loop's connection between passive WAL checkpoints
# journal_size_limit, and the WAL size past which a checkpoint truncates it: under sustained
# writes a passive checkpoint never catches up, the WAL is never restarted, and it grew to
# 3.8 GB beside a 1.1 GB database in a 25-minute run (bench/wal.py measures it)
WAL_LIMIT_BYTES = 16 * 1024 * 1024

# primary result codes meaning "the database cannot be used right now" (not a bug of ours)
_UNAVAILABLE = frozenset(
    {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY}
)


def storage_error(exc: sqlite3.Error) -> StoreError | None:
    """The storage exception for a storage failure, or None for any other SQLite error."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    name = getattr(exc, "sqlite_errorname", str(code))
    if code & 0xFF == sqlite3.SQLITE_FULL:
        log.error("store.disk_full", error=str(exc), code=name)
        return StorageFull(
            "the server's database disk is full: nothing of this request was stored; "
            "retry once space has been freed"
        )
    if code & 0xFF in _UNAVAILABLE:
        log.error("store.unavailable", error=str(exc), code=name)
        return StorageUnavailable(
            f"the server's database cannot be used right now ({name}): nothing of this request "
            "was stored; retry later",
            retry_after=5,
        )
    return None


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """SQLite's storage failures raised as storage exceptions (storage_error); every other
    error as it is."""
    try:
        yield
    except sqlite3.Error as exc:
        mapped = storage_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


class _Locked(Exception):
    """BEGIN IMMEDIATE found the database locked (SQLITE_BUSY)."""

    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


class Database:
    """One SQLite file: the loop's connection, the writer thread's, the reader pool's."""

    def __init__(self, path: Path, readers: int = 2) -> None:
        self.path = path
        self._local = threading.local()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="tether-sqlite-w")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="tether-sqlite-r")
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None  # the event loop thread's connection
        self._inline_thread: int | None = None
        self._inline_writes = 0
        self.files: Files | None = None  # set at the first connection
        self.wal_truncations = 0
        self._checkpointing = False

    def _connect(self, busy_timeout_ms: int, autocheckpoint: bool) -> sqlite3.Connection:
        self._guard()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # a deleted row's bytes are overwritten, not left in a free page: a deleted
        # conversation is gone from the file (no cost to a turn, which deletes nothing)
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        if not autocheckpoint:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        check_schema_version(conn, self.path)
        with self._lock:
            self._connections.append(conn)
            if self.files is None:
                self.files = Files(self.path)
        return conn

    def storage_problem(self) -> str | None:
        """What Files.check would refuse with, or None (for /health)."""
        try:
            self._guard()
        except StorageUnavailable as exc:
            return str(exc)
        return None

    def _guard(self) -> None:
        """StorageUnavailable if the open file is no longer the database's (Files.check)."""
        if self.files is not None:
            self.files.check()

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (the writer thread's and the readers'): waits up to 5 s."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(5000, autocheckpoint=True)
        return conn

    def _loop_conn(self) -> sqlite3.Connection | None:
        """The connection for the event loop's thread (None on any other thread): it never
        waits for a lock (the caller falls back instead) and never checkpoints the WAL."""
        if self._inline is None:
            self._inline = self._connect(0, autocheckpoint=False)
            self._inline_thread = threading.get_ident()
        return self._inline if self._inline_thread == threading.get_ident() else None

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        started = time.perf_counter()
        try:
            return await self._read(fn)
        finally:
            metrics.STORE_SECONDS.labels("read").observe(time.perf_counter() - started)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        started = time.perf_counter()
        try:
            return await self._write(fn)
        finally:
            metrics.STORE_SECONDS.labels("write").observe(time.perf_counter() - started)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            with storage_errors():
                conn = self._conn()
                self._guard()
                return fn(conn)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, run)

    def read_inline(self, fn: Callable[[sqlite3.Connection], T | None]) -> T | None:
        """Run a short read on the event loop's thread, in one read transaction; None if `fn`
        declines (too much to read there), if this is not the loop's thread, or if the
        database is busy: the caller then reads on the reader pool."""
        with storage_errors():
            try:
                conn = self._loop_conn()
                if conn is None:
                    return None
                self._guard()
                conn.execute("BEGIN")
                try:
                    return fn(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY:
                    return None
                raise

    def _transaction(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """One write transaction; _Locked if another connection holds the write lock. The
        files are checked before and after: a commit into a deleted file is no commit."""
        self._guard()
        with storage_errors():
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
        self._guard()
        return result

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with storage_errors():
            conn = self._loop_conn()
        if conn is not None:
            try:
                result = self._transaction(conn, fn)
            except _Locked:
                pass  # someone else is writing: wait for the lock on the writer thread
            else:
                self._after_inline_write()
                return result

        def run() -> T:
            try:
                return self._transaction(self._conn(), fn)
            except _Locked as exc:  # locked for longer than the busy timeout
                with storage_errors():  # SQLITE_BUSY: StorageUnavailable
                    raise exc.error from None

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, run)

    def _after_inline_write(self) -> None:
        """A checkpoint on the writer thread every CHECKPOINT_EVERY writes, or at once when
        the WAL has grown past WAL_LIMIT_BYTES (one fstat per write)."""
        self._inline_writes += 1
        if self._checkpointing:
            return
        files = self.files
        wal = files.wal_bytes() if files is not None else 0
        if self._inline_writes % CHECKPOINT_EVERY == 0 or wal > WAL_LIMIT_BYTES:
            self._checkpointing = True
            self._writer.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """Passive (never waits); if the WAL is still past WAL_LIMIT_BYTES — a passive one
        cannot restart a log that writers keep appending to, so it only grows — a truncating
        one, which waits (up to the busy timeout) for readers and makes new writers wait (the
        loop's writes fall back to this thread meanwhile)."""
        try:
            conn = self._conn()
            self._guard()
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            files = self.files
            if files is not None and files.wal_bytes() > WAL_LIMIT_BYTES:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                self.wal_truncations += 1
        except (sqlite3.Error, StoreError) as exc:
            log.warning("store.checkpoint_failed", error=str(exc))
        finally:
            self._checkpointing = False

    async def truncate_wal(self) -> None:
        """Copy the WAL into the database and empty it, on the writer thread, so what a delete
        overwrote is not kept in the log either. Best effort: a reader in the way only delays it
        to a later checkpoint."""

        def run() -> None:
            try:
                self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                log.warning("store.checkpoint_failed", error=str(exc))

        await asyncio.get_running_loop().run_in_executor(self._writer, run)

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
        if self.files is not None:
            self.files.close()
            self.files = None
