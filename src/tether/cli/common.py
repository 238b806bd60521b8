"""What every command shares: the stderr console, the --config and --database-url options, and
opening the store."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from tether.config import Settings
from tether.errors import TetherError
from tether.store import open_store
from tether.store.base import Store
from tether.store.errors import StoreError

T = TypeVar("T")

err = Console(stderr=True)

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="TOML config file, keys as in TETHER_* (env TETHER_CONFIG)"
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///path.db or postgresql://user@host/db (env TETHER_DATABASE_URL)",
    ),
]


async def with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Open and migrate the database, run `fn`. A database that cannot be used (disk full,
    read-only, a newer schema, a bad URL) is one line on stderr and exit code 2, not a
    traceback."""
    try:
        store = open_store(settings.database_url, owner=settings.instance_id)
        await store.open()
        try:
            await store.migrate()
            return await fn(store)
        finally:
            await store.close()
    except (TetherError, StoreError, ValueError, OSError, sqlite3.Error) as exc:
        message = exc.message if isinstance(exc, TetherError) else str(exc)
        err.print(f"[red]error:[/red] {settings.database_url}: {message}", highlight=False)
        raise typer.Exit(2) from None


def when(at: float | None) -> str:
    """A timestamp as the tables show it (local time), or nothing."""
    return "" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
