"""PostgreSQL behind `Store` (postgres:// and postgresql:// URLs), through asyncpg's pool."""

from tether.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
