"""The SQLite store's tenants' API keys (only their SHA-256 hashes are stored)."""

from __future__ import annotations

import sqlite3
import time

from tether.store.base import ApiKeyRow
from tether.store.errors import ConflictError


def add(c: sqlite3.Connection, tenant_id: str, key_hash: str, prefix: str) -> None:
    now = time.time()
    c.execute("INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)", (tenant_id, now))
    try:
        c.execute(
            "INSERT INTO api_keys (tenant_id, key_hash, prefix, created_at) VALUES (?,?,?,?)",
            (tenant_id, key_hash, prefix, now),
        )
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"an API key with this hash already exists: {exc}") from exc


def revoke(c: sqlite3.Connection, prefix: str, key_hash: str | None) -> int:
    """Revoke the one active key matching; how many active keys matched."""
    where = "revoked_at IS NULL AND prefix = ? AND (? IS NULL OR key_hash = ?)"
    matches = int(
        c.execute(
            f"SELECT count(*) FROM api_keys WHERE {where}", (prefix, key_hash, key_hash)
        ).fetchone()[0]
    )
    if matches == 1:
        c.execute(
            f"UPDATE api_keys SET revoked_at = ? WHERE {where}",
            (time.time(), prefix, key_hash, key_hash),
        )
    return matches


def tenant_for(c: sqlite3.Connection, key_hash: str) -> str | None:
    row = c.execute(
        "SELECT tenant_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
    ).fetchone()
    return None if row is None else str(row[0])


def listed(c: sqlite3.Connection) -> list[ApiKeyRow]:
    rows = c.execute(
        "SELECT prefix, tenant_id, created_at, revoked_at FROM api_keys ORDER BY id"
    ).fetchall()
    return [ApiKeyRow(*r) for r in rows]


def count(c: sqlite3.Connection) -> int:
    # revoked keys count: revoking every key must not turn authentication off
    return int(c.execute("SELECT count(*) FROM api_keys").fetchone()[0])
