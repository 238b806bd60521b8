"""Persistence behind one interface (`Store`): SQLite (embedded default), in memory (tests), and
PostgreSQL (not built yet)."""

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
        raise ValueError("PostgreSQL support is not built yet: use sqlite:///path/to/file.db")
    raise ValueError(
        f"unsupported database URL {url!r}: expected sqlite:///path/to/file.db (or memory://)"
    )


__all__ = ["Store", "open_store"]
