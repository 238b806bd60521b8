"""Persistence behind one interface (`Store`): SQLite (embedded default), in memory (tests), and
PostgreSQL (postgres://, several servers on one database)."""

from tether.store.base import Store


def open_store(url: str, *, owner: str = "local") -> Store:
    """The store for a database URL. `owner` names this server in the running turns and
    idempotency claims it writes: its start-up sweeps touch only its own."""
    if url.startswith("sqlite:///"):
        from tether.store.sqlite import SqliteStore

        return SqliteStore(url, owner=owner)
    if url == "memory://":
        from tether.store.memory import MemoryStore

        return MemoryStore(url, owner=owner)
    if url.startswith(("postgres://", "postgresql://")):
        try:
            from tether.store.postgres import PostgresStore
        except ImportError as exc:  # asyncpg is an extra
            raise ValueError(
                f"PostgreSQL needs asyncpg: pip install 'tether[postgres]' ({exc})"
            ) from None
        return PostgresStore(url, owner=owner)
    raise ValueError(
        f"unsupported database URL {url!r}: expected sqlite:///path/to/file.db, "
        "postgresql://user@host/database (or memory://)"
    )


__all__ = ["Store", "open_store"]
