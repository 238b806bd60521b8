"""What a store raises when it cannot do what it was asked. Storage knows nothing of HTTP:
`tether.api.errors.error_of` maps these to the client-facing error, in one place."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for store failures the engine or the API can act on. `str(exc)` is the
    message a client may be shown."""


class ConflictError(StoreError):
    """The conversation moved on since it was read (another writer appended), or the write
    names something that already exists (a conversation id, an alias)."""


class StorageFull(StoreError):
    """The database's disk is full: nothing of the write was stored; retrying works once space
    has been freed."""


class StorageUnavailable(StoreError):
    """The database cannot be used right now (read-only, locked, failing, its file deleted or
    replaced): nothing of the write was stored. `retry_after`: seconds after which a retry may
    work."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueryError(StoreError):
    """A search query the full-text index rejects (FTS5 syntax): the caller's mistake, whose
    message says why."""


class SchemaTooNew(StoreError, ValueError):
    """The database was written by a newer Tether (a migration this build does not know)."""


__all__ = [
    "ConflictError",
    "QueryError",
    "SchemaTooNew",
    "StorageFull",
    "StorageUnavailable",
    "StoreError",
]
