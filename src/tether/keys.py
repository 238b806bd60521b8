"""API keys as Tether knows them: how one is made, the hash the store keeps of it (never the key
itself), and the tenant every caller is while no key exists (open mode). Shared by the API's
Bearer gate, the dashboard's sign-in and the CLI."""

from __future__ import annotations

import hashlib
import secrets

OPEN_TENANT = "default"
KEY_PREFIX = "tk_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
