"""PostgreSQL: tenants' API keys (only their SHA-256 hashes are stored)."""

from __future__ import annotations

import time

from tether.store.base import ApiKeyRow
from tether.store.postgres.db import Conn
from tether.store.postgres.sql import ensure_tenant

ACTIVE = "revoked_at IS NULL AND prefix = $1 AND ($2::text IS NULL OR key_hash = $2)"


async def add(c: Conn, tenant_id: str, key_hash: str, prefix: str) -> None:
    """A hash added twice is a unique violation: ConflictError (postgres/db.py)."""
    now = time.time()
    await ensure_tenant(c, tenant_id, now)
    await c.execute(
        "INSERT INTO api_keys (tenant_id, key_hash, prefix, created_at) VALUES ($1,$2,$3,$4)",
        tenant_id,
        key_hash,
        prefix,
        now,
    )


async def revoke(c: Conn, prefix: str, key_hash: str | None) -> int:
    """Revoke the one active key matching; how many active keys matched."""
    rows = await c.fetch(f"SELECT id FROM api_keys WHERE {ACTIVE} FOR UPDATE", prefix, key_hash)
    if len(rows) == 1:
        await c.execute(
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1", rows[0][0], time.time()
        )
    return len(rows)


async def tenant_for(c: Conn, key_hash: str) -> str | None:
    found = await c.fetchval(
        "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
    )
    return None if found is None else str(found)


async def listed(c: Conn) -> list[ApiKeyRow]:
    rows = await c.fetch(
        "SELECT prefix, tenant_id, created_at, revoked_at FROM api_keys ORDER BY id"
    )
    return [ApiKeyRow(*r) for r in rows]


async def count(c: Conn) -> int:
    # revoked keys count: revoking every key must not turn authentication off
    return int(await c.fetchval("SELECT count(*) FROM api_keys"))
