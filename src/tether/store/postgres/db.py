"""PostgreSQL: the connection pool (asyncpg), the transactions every store method runs in, and
how the server's failures become store/errors.py exceptions. A transaction holds a connection
only while its statements run: nothing slow (a model call, a tool) ever runs inside one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import asyncpg.exceptions as pgerr

from tether.store.errors import ConflictError, StorageFull, StorageUnavailable, StoreError

T = TypeVar("T")
Conn: TypeAlias = asyncpg.Connection  # Any to mypy: asyncpg ships no types
Job = Callable[[Conn], Awaitable[T]]

PROBLEM_SECONDS = 5.0  # how long storage_problem() reports a failure (StorageUnavailable's retry)
# options of a database URL this store reads itself (asyncpg would send them to the server)
STORE_OPTIONS = ("search_path", "pool_size")
CONFLICTS = (
    pgerr.UniqueViolationError,
    pgerr.ForeignKeyViolationError,
    pgerr.SerializationError,
    pgerr.DeadlockDetectedError,
)
UNAVAILABLE = (
    pgerr.PostgresConnectionError,  # class 08: the connection failed
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
    pgerr.CannotConnectNowError,
    pgerr.ReadOnlySQLTransactionError,
    pgerr.TooManyConnectionsError,
    pgerr.InsufficientResourcesError,  # class 53 but disk full (out of memory, …)
    pgerr.LockNotAvailableError,
    pgerr.QueryCanceledError,  # statement_timeout, or an operator's cancel
    pgerr.InterfaceError,  # the connection closed under us
    pgerr.InternalClientError,  # … and a message of its closing arrived mid-statement
    ConnectionError,
    OSError,
    TimeoutError,
)


def parse_url(url: str) -> tuple[str, dict[str, str], int]:
    """The DSN asyncpg connects with, the server settings this store sets on every connection
    (`?search_path=a,b`: tests give each test its own schema), and the pool's size
    (`?pool_size=`, 10 by default)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in STORE_OPTIONS}
    rest = [(k, v) for k, v in query if k not in STORE_OPTIONS]
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    settings = {"search_path": own["search_path"]} if own.get("search_path") else {}
    return dsn, settings, int(own.get("pool_size") or 10)


def mapped(exc: BaseException) -> StoreError | None:
    """The store error a database failure is, or None (a bug: let it through)."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, CONFLICTS):
        detail = getattr(exc, "detail", None) or ""
        return ConflictError(f"the write conflicts with another: {exc} {detail}".strip())
    if isinstance(exc, pgerr.DiskFullError):
        return StorageFull("the database's disk is full")
    if isinstance(exc, UNAVAILABLE):
        return StorageUnavailable(f"the database is unavailable: {type(exc).__name__}: {exc}")
    return None


class Database:
    """The pool, opened by `open()`. `write` runs a function in a read-committed transaction,
    `snapshot` in a read-only repeatable-read one (several reads that must agree), `read` on a
    pooled connection without a transaction (one statement)."""

    def __init__(self, url: str) -> None:
        self.dsn, self.settings, self.size = parse_url(url)
        self.pool: asyncpg.Pool | None = None
        self.failed: tuple[str, float] | None = None  # the last unavailability, and when

    def problem(self) -> str | None:
        """The last storage failure, for PROBLEM_SECONDS after it (or until a call succeeds):
        /health answers 503 meanwhile. It fades by itself: a load balancer that stopped sending
        requests on a 503 would otherwise never see one succeed."""
        if self.failed is None or time.monotonic() - self.failed[1] > PROBLEM_SECONDS:
            return None
        return self.failed[0]

    async def open(self) -> None:
        if self.pool is not None:
            return
        try:
            self.pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.size,
                server_settings=self.settings,
                timeout=10,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # a refused connection, a wrong password, no such database: one line, not a trace
            error = mapped(exc) or StorageUnavailable(f"cannot open the database: {exc}")
            raise error from exc

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            await pool.close()

    async def _run(self, fn: Job[T], tx: dict[str, Any] | None) -> T:
        if self.pool is None:
            raise StorageUnavailable("the database is not open")
        try:
            async with self.pool.acquire() as conn:
                if tx is None:
                    result = await fn(conn)
                else:
                    async with conn.transaction(**tx):
                        result = await fn(conn)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            error = mapped(exc)
            if isinstance(error, StorageUnavailable | StorageFull):
                self.failed = (str(error), time.monotonic())
            if error is None or error is exc:
                raise
            raise error from exc
        self.failed = None
        return result

    async def write(self, fn: Job[T]) -> T:
        return await self._run(fn, {})

    async def snapshot(self, fn: Job[T]) -> T:
        return await self._run(fn, {"isolation": "repeatable_read", "readonly": True})

    async def read(self, fn: Job[T]) -> T:
        return await self._run(fn, None)


def rowcount(status: str) -> int:
    """How many rows a statement's status ("DELETE 3", "INSERT 0 2") names."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
