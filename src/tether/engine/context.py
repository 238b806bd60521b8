"""Loading a turn's context: the conversation, its latest checkpoint, the merge plan, the view,
the token count and the budget it is measured against."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from tether.compaction.policy import Budget
from tether.compaction.view import estimate, render, system_block, tail_messages
from tether.config import Settings
from tether.engine.cache import CachedView, Lru, cached_view
from tether.engine.dangling import close_dangling
from tether.engine.fingerprint import EMPTY, chain, is_history
from tether.engine.ids import mint_conversation_id
from tether.engine.matching import HistoryProbe
from tether.engine.merge import MergePlan, merge, mode_of
from tether.engine.types import TurnRequest, title_of, with_tokens
from tether.model import Checkpoint, Conversation, Message
from tether.store.base import NewConversation, Store

_COUNT_INLINE_CHARS = 64 * 1024


@dataclass(slots=True)
class Target:
    """Where the turn commits and what the model sees."""

    tenant_id: str
    conv: Conversation | None  # the stored conversation (a fork's parent)
    new: NewConversation | None  # set when the turn creates a conversation (maybe a fork)
    plan: MergePlan
    checkpoint: Checkpoint | None  # the checkpoint the view is built on
    model: str
    stored: CachedView | None = None  # the stored part of the view, ready to send
    base_hash: bytes | None = None  # the transcript hash the turn's messages extend (None:
    base_len: int | None = None  # not known, see engine/fingerprint.py)

    @property
    def conversation_id(self) -> str:
        if self.new is not None:
            return self.new.id
        assert self.conv is not None
        return self.conv.id

    @property
    def forked_from(self) -> tuple[str, int] | None:
        if self.new is not None and self.conv is not None:
            return (self.conv.id, self.plan.fork_seq or 0)
        return None

    @property
    def epoch(self) -> int:
        """The epoch the view is built on (a fork renumbers an inherited checkpoint as 1)."""
        if self.checkpoint is None:
            return 0
        return 1 if self.new is not None else self.checkpoint.epoch

    @property
    def can_compact(self) -> bool:
        return self.conv is not None and self.new is None

    def view_messages(self) -> tuple[str | None, list[Message]]:
        system = system_block(self.plan.system_prompt, self.checkpoint)
        kept = tail_messages(self.plan.history, self.checkpoint)
        return system, [*kept, *(m for m in self.plan.new if m.role != "system")]

    def view(self) -> list[dict[str, Any]]:
        return render(*self.view_messages())

    def prompt_tokens(self) -> int:
        """The upstream's reported prompt size of the last turn plus what was added since, when
        the view is still built the same way; else an offline estimate of the whole view."""
        system, messages = self.view_messages()
        conv = self.conv
        if (
            conv is not None
            and self.new is None
            and conv.usage_prompt_tokens
            and conv.usage_through_seq is not None
            and conv.usage_epoch == conv.epoch
            and not self.plan.system_changed
        ):
            since = sum(m.tokens for m in messages if m.seq > conv.usage_through_seq or not m.seq)
            return conv.usage_prompt_tokens + since
        return estimate(system, messages)


def budget_for(
    settings: Settings, model: str, params: dict[str, Any], learned: int | None = None
) -> Budget:
    """The budget for a model: configured window > learned from the upstream > default."""
    window = settings.model_context_windows.get(model) or learned or settings.default_context_window
    max_tokens = params.get("max_completion_tokens") or params.get("max_tokens")
    if isinstance(max_tokens, int) and 0 < max_tokens < window:
        reserved = max_tokens
    else:
        reserved = min(settings.reserved_output_tokens, window // 4)
    threshold = settings.model_compaction_thresholds.get(model, settings.compaction_threshold)
    return Budget(window, reserved, threshold, settings.compaction_tail_ratio)


async def load_target(
    store: Store,
    req: TurnRequest,
    lock_id: str | None,
    model: str,
    views: Lru[tuple[str, str], CachedView] | None = None,
    probe: HistoryProbe | None = None,
    close_dangling_calls: bool = True,
) -> Target:
    """`probe`: a full-history request's history (engine/matching.py); when it extends the
    stored transcript, only the part the model sees is read (from the view cache if it is
    there), never the whole transcript."""
    mode = mode_of(req.messages, req.history)
    full = mode == "replay"  # a full-history client is compared with the whole transcript
    conv: Conversation | None = None
    checkpoint: Checkpoint | None = None
    stored: list[Message] = []
    cached: CachedView | None = None
    known: int | None = None  # request history messages known to be the stored transcript
    if lock_id is not None:
        key = (req.tenant_id, lock_id)
        cached = views.get(key) if views is not None else None
        if cached is None:
            loaded = await store.load_conversation(req.tenant_id, lock_id, False)
            if loaded.conversation is not None:
                tail = loaded.messages or []
                cached = cached_view(loaded.conversation, loaded.checkpoint, tail)
                if views is not None:
                    views.put(key, cached)
        if cached is not None:  # current: see engine/cache.py
            conv, checkpoint, stored = cached.conv, cached.checkpoint, cached.messages
            if full:
                known = probe.known(conv, cached) if probe is not None else None
                if known is None:  # compared with the whole transcript
                    loaded = await store.load_conversation(req.tenant_id, lock_id, True)
                    if loaded.conversation is not None:
                        conv, checkpoint = loaded.conversation, loaded.checkpoint
                        stored = loaded.messages or []
    plan = merge(stored, conv.system_prompt if conv else None, req.messages, mode, known)
    if close_dangling_calls:
        closed_new, closed = close_dangling(plan.history, plan.new)
        if closed:
            plan = replace(plan, new=closed_new, closed=tuple(closed))
    size = sum(len(str(m.content)) for m in plan.new)
    if size > _COUNT_INLINE_CHARS:  # counting megabytes takes a while: not on the event loop
        counted = await asyncio.to_thread(lambda: [with_tokens(m) for m in plan.new])
    else:
        counted = [with_tokens(m) for m in plan.new]
    plan = replace(plan, new=counted)
    if conv is None:
        new = NewConversation(lock_id or mint_conversation_id(), title_of(plan.new), model)
        return Target(req.tenant_id, None, new, plan, None, model, base_hash=EMPTY, base_len=0)
    if plan.fork_seq is not None:
        fork = NewConversation(
            mint_conversation_id(), fork_title(conv.title, plan.new), model, conv.pk, plan.fork_seq
        )
        inherited = await _checkpoint_within(store, conv.pk, plan.fork_seq) if conv.epoch else None
        shared = [m for m in plan.history if is_history(m)]
        return Target(
            req.tenant_id,
            conv,
            fork,
            plan,
            inherited,
            model,
            base_hash=chain(EMPTY, shared),
            base_len=len(shared),
        )
    base_hash, base_len = conv.history_hash, conv.history_len
    if base_hash is None and known is None and full:  # written before the hash: read whole
        whole = [m for m in plan.history if is_history(m)]
        base_hash, base_len = chain(EMPTY, whole), len(whole)
    return Target(
        req.tenant_id,
        conv,
        None,
        plan,
        checkpoint,
        model,
        cached,
        base_hash=base_hash,
        base_len=base_len,
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
