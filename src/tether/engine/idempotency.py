"""Idempotency-Key, for every protocol: claim a key before the turn, replay what a finished one
stored, store the response with the turn's commit (same transaction), release the claim when the
turn fails so a retry runs."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from tether.errors import TetherError
from tether.store.base import IdempotencyKey, IdempotencyRecord, Store, StoredResponse


def key_for(
    tenant_id: str, route: str, key: str | None, meaning: list[Any]
) -> IdempotencyKey | None:
    """The claim for header value `key` on `route`; `meaning`: the request as it will be run
    (its body and every header that changes what it does), so a reuse with another request is
    told apart."""
    if key is None:
        return None
    # C0, DEL and C1 (headers are decoded as latin-1: bytes 0x80-0x9f are U+0080-U+009F)
    if not 1 <= len(key) <= 255 or any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in key):
        raise TetherError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 characters without control characters",
            param="idempotency-key",
        )
    serialised = orjson.dumps(meaning, option=orjson.OPT_SORT_KEYS)
    return IdempotencyKey(tenant_id, route, key, hashlib.sha256(serialised).hexdigest())


async def claim(store: Store, key: IdempotencyKey, retention: float) -> IdempotencyRecord | None:
    """Claim the key for a new turn (None), or the finished turn's record to replay; 422 when
    the key was used with another request, 409 while its turn still runs."""
    record = await store.claim_idempotency(key, retention)
    if record is None:
        return None
    if record.request_hash != key.request_hash:
        raise TetherError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request",
            param="idempotency-key",
        )
    if record.status != "completed" or record.response is None:
        raise TetherError(
            409,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still running; retry shortly",
            headers={"Retry-After": "1"},
        )
    return record


def stored(
    key: IdempotencyKey, stream: bool, payloads: list[bytes], headers: dict[str, str]
) -> StoredResponse:
    """What a keyed turn commits with: its one JSON body, or every payload of its stream."""
    body = orjson.dumps([p.decode() for p in payloads]) if stream else payloads[-1]
    return StoredResponse(key, stream, body, headers)


def replayed(record: IdempotencyRecord) -> tuple[list[bytes], dict[str, str]]:
    """A stored response's payloads (a stream's, or the one body) and its headers."""
    headers = {**(record.headers or {}), "Idempotent-Replayed": "true"}
    assert record.response is not None
    if not record.stream:
        return [record.response], headers
    return [p.encode() for p in orjson.loads(record.response)], headers


async def release(store: Store, key: IdempotencyKey | None) -> None:
    if key is not None:
        await store.release_idempotency(key)
