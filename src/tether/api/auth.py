"""`Authorization: Bearer <key>` → tenant. With no keys at all (allowed on loopback only) every
caller is the `default` tenant. The per-key rate limit (if on) is applied here too. Called once
per request, before routing, by api/gate.py."""

from __future__ import annotations

import time

import structlog

from tether.api.ratelimit import RateLimiter
from tether.errors import TetherError
from tether.keys import KEY_PREFIX, OPEN_TENANT, hash_key, new_key
from tether.store.base import Store

log = structlog.get_logger("tether.auth")

# The key helpers live in tether/keys.py (the dashboard uses them too); re-exported here.
__all__ = ["KEY_PREFIX", "OPEN_TENANT", "Authenticator", "hash_key", "new_key"]


class Authenticator:
    def __init__(
        self,
        store: Store,
        open_check_ttl: float = 2.0,
        key_ttl: float = 30.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self._ttl = open_check_ttl
        self._open: tuple[float, bool] = (0.0, False)
        self._key_ttl = key_ttl
        self._keys: dict[str, tuple[float, str]] = {}  # key hash → (checked at, tenant)

    async def is_open(self) -> bool:
        """True while no API key exists (cached for a moment)."""
        checked, value = self._open
        now = time.monotonic()
        if now - checked > self._ttl:
            was = value
            value = await self.store.count_api_keys() == 0
            if checked and was and not value:
                log.warning(
                    "auth.enabled",
                    detail="an API key was created: open mode is over, every request now needs "
                    "'Authorization: Bearer <key>' (the start-up banner's 'auth OFF' is outdated)",
                )
            self._open = (now, value)
        return value

    async def authenticate(self, authorization: str | None) -> str:
        """The tenant of a request sending this Authorization header; 401 without a valid
        key, 429 over the key's rate limit (one token taken)."""
        tenant, bucket = await self._identify(authorization)
        if self.limiter is not None:
            self.limiter.check(bucket)
        return tenant

    async def _identify(self, header: str | None) -> tuple[str, str]:
        """(tenant, rate-limit bucket): the key's hash for a valid key, else the open tenant."""
        if header:
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise TetherError(401, "invalid_api_key", "use 'Authorization: Bearer <key>'")
            digest = hash_key(key.strip())
            now = time.monotonic()
            hit = self._keys.get(digest)
            if hit is not None and now - hit[0] < self._key_ttl:
                return hit[1], digest
            tenant = await self.store.tenant_for_key(digest)
            if tenant is not None:
                if len(self._keys) > 10000:
                    self._keys.clear()
                self._keys[digest] = (now, tenant)
                return tenant, digest
            if not await self.is_open():
                raise TetherError(401, "invalid_api_key", "the API key is not valid")
            return OPEN_TENANT, OPEN_TENANT
        if await self.is_open():
            return OPEN_TENANT, OPEN_TENANT
        raise TetherError(
            401, "missing_api_key", "send your Tether key as 'Authorization: Bearer <key>'"
        )
