"""The turn's first step: which conversation it runs on. A named id (or an alias of one), the
conversation a full history continues, or none yet (the turn creates it)."""

from __future__ import annotations

import structlog

from tether.engine.cache import CachedView, cached_view
from tether.engine.deps import Deps
from tether.engine.ids import is_server_minted
from tether.engine.matching import HistoryProbe, continued
from tether.engine.request import TurnRequest
from tether.errors import TetherError
from tether.model import Conversation

log = structlog.get_logger("tether.turn")


async def resolve(deps: Deps, req: TurnRequest, probe: HistoryProbe | None) -> str | None:
    """The conversation the turn runs on (None: a new one). `probe`: a full-history request's
    history, matched against transcripts (engine/matching.py)."""
    cid = req.conversation_id
    matching = probe is not None and req.match != "off"
    if cid is None:
        if probe is None or not matching:
            return None
        found = await continued(deps.store, req.tenant_id, probe)
        return found.id if found else None
    known = deps.canonical.get((req.tenant_id, cid))
    if known is not None and not matching:  # ids never change, so this cannot go stale
        return known
    lookup = known or cid
    conv, cached = await _read(deps, req.tenant_id, lookup, matching)
    if conv is not None:
        deps.canonical.put((req.tenant_id, cid), conv.id)
    if conv is None and is_server_minted(cid):
        raise TetherError(
            404,
            "conversation_not_found",
            f"conversation {cid!r} does not exist (ids starting with 'conv_' are minted by "
            "the server; omit the id to start a new conversation)",
        )
    if conv is None:
        return cid
    if probe is not None and matching and not probe.extends(conv, cached):
        fork = await continued(deps.store, req.tenant_id, probe, within=conv)
        if fork is not None:
            log.info("turn.fork_continued", conversation=conv.id, fork=fork.id)
            return fork.id
    return conv.id


async def _read(
    deps: Deps, tenant_id: str, lookup: str, matching: bool
) -> tuple[Conversation | None, CachedView | None]:
    """The conversation's row, and its view when a full history is to be compared with it."""
    cached = deps.cached(tenant_id, lookup)
    if cached is not None:
        return cached.conv, cached
    if not matching:
        return await deps.store.resolve(tenant_id, lookup), None
    # read the view now, not just the row (the turn reads it next anyway, and it stays cached):
    # compared with it, the request needs no transcript hash (~170 µs at 200 messages). Read
    # without the conversation's lock, it is kept only if no turn wrote the entry meanwhile
    # (else it may be older than that turn's commit)
    stamp = deps.views.stamp((tenant_id, lookup))
    loaded = await deps.store.load_conversation(tenant_id, lookup, False)
    conv = loaded.conversation
    if conv is None:
        return None, None
    cached = cached_view(conv, loaded.checkpoint, loaded.messages or [])
    if conv.id == lookup:  # (an alias's view is filed under the conversation's id)
        deps.views.put_if((tenant_id, lookup), cached, stamp)
    return conv, cached
