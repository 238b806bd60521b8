"""Which conversation a full-history request continues (docs/contract.md, "Continuing").

A full-history request (one that holds an assistant message) is compared with conversations by
transcript hash (engine/fingerprint.py), before its turn takes a conversation's lock:

- naming a conversation whose transcript its history extends: that conversation;
- naming one it diverges from: the fork of it (at any depth) whose transcript it extends, so a
  client that never reads a fork's id keeps growing that fork instead of forking again;
- naming none: the tenant's conversation whose transcript it extends, so clients that never send
  an id (chat UIs, `llm` without a header) keep one conversation instead of a copy per request.

Several candidates: the longest transcript wins, then the most recently active. Only whole
transcripts count, so the lookup is one probe of the (tenant, hash) index per candidate length.
`X-Tether-Match: off` turns it off for a request.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.store.base import Conversation, Store

_MAX_FORK_DEPTH = 32


def extends(conv: Conversation, hashes: Sequence[bytes]) -> bool:
    """Whether a request whose history has these prefix hashes extends `conv`'s transcript."""
    n = conv.history_len
    return (
        conv.history_hash is not None
        and n is not None
        and n < len(hashes)
        and hashes[n] == conv.history_hash
    )


async def continued(
    store: Store,
    tenant_id: str,
    roles: Sequence[str | None],
    hashes: Sequence[bytes],
    within: Conversation | None = None,
) -> Conversation | None:
    """The conversation (of the tenant; a fork of `within` if given) whose whole transcript is a
    prefix of the request's history (whose `roles` are given) ending in an assistant message,
    with something left to add."""
    candidates = [hashes[j] for j in range(1, len(roles)) if roles[j - 1] == "assistant"]
    found = await store.find_by_history(tenant_id, candidates)
    if within is not None:
        found = [c for c in found if c.pk != within.pk and await _descends(store, c, within)]
    if not found:
        return None
    return max(found, key=lambda c: (c.history_len or 0, c.updated_at))


async def _descends(store: Store, conv: Conversation, ancestor: Conversation) -> bool:
    seen = conv
    for _ in range(_MAX_FORK_DEPTH):
        if seen.forked_from_pk is None or seen.forked_from_id is None:
            return False
        if seen.forked_from_pk == ancestor.pk:
            return True
        parent = await store.resolve(seen.tenant_id, seen.forked_from_id)
        if parent is None:
            return False
        seen = parent
    return False
