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

from tether.engine.cache import CachedView
from tether.engine.fingerprint import is_history, raw_extends_fast
from tether.engine.incoming import Incoming
from tether.engine.merge import history_hashes, history_roles
from tether.model import Conversation, Message
from tether.store.base import Store

_MAX_FORK_DEPTH = 32
_FIRST_PROBES = 4  # the longest candidate prefixes, probed before the rest


class HistoryProbe:
    """A full-history request's history, as compared with transcripts: directly against a
    conversation's cached transcript where the cache holds all of it (no checkpoint), else by
    the prefix hashes, computed once and only if needed."""

    def __init__(self, request: Sequence[Message]) -> None:
        self.request = request
        self._hashes: list[bytes] | None = None
        self._seen: dict[tuple[int, int], bool] = {}  # (conversation pk, last seq) → extends

    @property
    def hashes(self) -> list[bytes]:
        if self._hashes is None:
            self._hashes = history_hashes(self.request)
        return self._hashes

    @property
    def roles(self) -> list[str | None]:
        return history_roles(self.request)

    def extends(self, conv: Conversation, cached: CachedView | None) -> bool:
        """Whether the request's history starts with `conv`'s whole transcript."""
        seen = self._seen.get((conv.pk, conv.last_seq))
        if seen is None:
            whole = cached is not None and cached.checkpoint is None and cached.conv is conv
            if whole and isinstance(self.request, Incoming):
                assert cached is not None
                request = self.request
                seen = raw_extends_fast(request.raw, request.roles, cached.shapes, cached.messages)
            else:
                seen = extends(conv, self.hashes)
            self._seen[(conv.pk, conv.last_seq)] = seen
        return seen

    def known(self, conv: Conversation, cached: CachedView | None) -> int | None:
        """How many of the request's history messages are `conv`'s transcript (None: it does
        not extend it, or that is not known without reading the transcript)."""
        if not self.extends(conv, cached):
            return None
        if conv.history_len is not None:
            return conv.history_len
        assert cached is not None  # extended without a hash: compared with the cached whole
        return sum(1 for m in cached.messages if is_history(m))


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
    store: Store, tenant_id: str, probe: HistoryProbe, within: Conversation | None = None
) -> Conversation | None:
    """The conversation (of the tenant; a fork of `within` if given) whose whole transcript is a
    prefix of the request's history ending in an assistant message, with something left to
    add. The longest prefixes are probed first: the conversation a client continues is almost
    always its history but the last message, so a long history costs one probe, not one per
    assistant message in it."""
    roles, hashes = probe.roles, probe.hashes
    ends = [j for j in range(len(roles) - 1, 0, -1) if roles[j - 1] == "assistant"]
    for batch in (ends[:_FIRST_PROBES], ends[_FIRST_PROBES:]):
        found = await store.find_by_history(tenant_id, [hashes[j] for j in batch])
        if within is not None:
            found = [c for c in found if c.pk != within.pk and await _descends(store, c, within)]
        if found:
            return max(found, key=lambda c: (c.history_len or 0, c.updated_at))
    return None


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
