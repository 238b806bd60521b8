"""The turn's "load and merge" step: read the conversation (its cached view when it is there),
merge the request's messages into it, count their tokens, and say where the turn commits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from tether.engine.cache import CachedView, cached_view
from tether.engine.dangling import close_dangling
from tether.engine.deps import Deps
from tether.engine.fingerprint import EMPTY, chain, is_history
from tether.engine.ids import mint_conversation_id
from tether.engine.matching import HistoryProbe
from tether.engine.merge import MergePlan, merge, mode_of
from tether.engine.messages import title_of, with_tokens
from tether.engine.request import TurnRequest
from tether.engine.target import Target
from tether.model import Checkpoint, Conversation, Message
from tether.store.base import NewConversation, Store

_COUNT_INLINE_CHARS = 64 * 1024


@dataclass(slots=True)
class _Stored:
    """What the turn read of its conversation."""

    conv: Conversation | None = None
    checkpoint: Checkpoint | None = None
    messages: list[Message] | None = None
    cached: CachedView | None = None
    known: int | None = None  # request history messages known to be the stored transcript


async def load_target(
    deps: Deps,
    req: TurnRequest,
    lock_id: str | None,
    model: str,
    probe: HistoryProbe | None = None,
    close_dangling_calls: bool = True,
) -> Target:
    """`probe`: a full-history request's history (engine/matching.py); when it extends the
    stored transcript, only the part the model sees is read (from the view cache if it is
    there), never the whole transcript."""
    mode = mode_of(req.messages, req.history)
    full = mode == "replay"  # a full-history client is compared with the whole transcript
    got = await _read(deps, req.tenant_id, lock_id, full, probe)
    conv = got.conv
    plan = merge(
        got.messages or [], conv.system_prompt if conv else None, req.messages, mode, got.known
    )
    plan = await _counted(_closed(plan) if close_dangling_calls else plan)
    if conv is None:
        new = NewConversation(lock_id or mint_conversation_id(), title_of(plan.new), model)
        return Target(req.tenant_id, None, new, plan, None, model, base_hash=EMPTY, base_len=0)
    if plan.fork_seq is not None:
        return await _fork(deps.store, req.tenant_id, conv, plan, model)
    base_hash, base_len = conv.history_hash, conv.history_len
    if base_hash is None and got.known is None and full:  # written before the hash: read whole
        whole = [m for m in plan.history if is_history(m)]
        base_hash, base_len = chain(EMPTY, whole), len(whole)
    return Target(
        req.tenant_id,
        conv,
        None,
        plan,
        got.checkpoint,
        model,
        got.cached,
        base_hash=base_hash,
        base_len=base_len,
    )


async def _read(
    deps: Deps, tenant_id: str, lock_id: str | None, full: bool, probe: HistoryProbe | None
) -> _Stored:
    if lock_id is None:
        return _Stored()
    cached = deps.cached(tenant_id, lock_id)
    if cached is None:
        loaded = await deps.store.load_conversation(tenant_id, lock_id, False)
        if loaded.conversation is None:
            return _Stored()
        cached = cached_view(loaded.conversation, loaded.checkpoint, loaded.messages or [])
        deps.views.put((tenant_id, lock_id), cached)
    got = _Stored(cached.conv, cached.checkpoint, cached.messages, cached)
    if full:
        got.known = probe.known(cached.conv, cached) if probe is not None else None
        if got.known is None:  # compared with the whole transcript
            loaded = await deps.store.load_conversation(tenant_id, lock_id, True)
            if loaded.conversation is not None:
                got.conv, got.checkpoint = loaded.conversation, loaded.checkpoint
                got.messages = loaded.messages or []
    return got


def _closed(plan: MergePlan) -> MergePlan:
    """Tool calls left unanswered before a new user message get a synthetic answer."""
    closed_new, closed = close_dangling(plan.history, plan.new)
    return replace(plan, new=closed_new, closed=tuple(closed)) if closed else plan


async def _counted(plan: MergePlan) -> MergePlan:
    size = sum(len(str(m.content)) for m in plan.new)
    if size > _COUNT_INLINE_CHARS:  # counting megabytes takes a while: not on the event loop
        counted = await asyncio.to_thread(lambda: [with_tokens(m) for m in plan.new])
    else:
        counted = [with_tokens(m) for m in plan.new]
    return replace(plan, new=counted)


async def _fork(
    store: Store, tenant_id: str, conv: Conversation, plan: MergePlan, model: str
) -> Target:
    """The request edits the past: a new conversation holding the shared prefix."""
    assert plan.fork_seq is not None
    fork = NewConversation(
        mint_conversation_id(), fork_title(conv.title, plan.new), model, conv.pk, plan.fork_seq
    )
    inherited = await _checkpoint_within(store, conv.pk, plan.fork_seq) if conv.epoch else None
    shared = [m for m in plan.history if is_history(m)]
    return Target(
        tenant_id,
        conv,
        fork,
        plan,
        inherited,
        model,
        base_hash=chain(EMPTY, shared),
        base_len=len(shared),
    )


def fork_title(parent: str | None, new: list[Message]) -> str | None:
    """A fork is titled by what made it differ (the edited message), not its parent's title."""
    return title_of(new) or (f"{parent} (fork)" if parent else None)


async def _checkpoint_within(store: Store, conversation_pk: int, seq: int) -> Checkpoint | None:
    """The parent's latest checkpoint that only covers messages the fork shares."""
    candidates = [
        c
        for c in await store.list_checkpoints(conversation_pk)
        if c.covers_through_seq <= seq and c.prune_through_seq <= seq
    ]
    return candidates[-1] if candidates else None
