"""Persistence behind one interface (`Store`): SQLite (embedded default) and PostgreSQL."""

from tether.store.base import Store


def open_store(url: str) -> Store:
    """The store for a database URL."""
    if url.startswith("sqlite:///"):
        from tether.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgres://", "postgresql://")):
        raise ValueError("PostgreSQL support is not built yet: use sqlite:///path/to/file.db")
    raise ValueError(f"unsupported database URL {url!r}: expected sqlite:///path/to/file.db")


__all__ = ["Store", "open_store"]
