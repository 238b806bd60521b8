"""Running one compaction: cheap stage first, then the summary; committed as a checkpoint.

The watermark is fixed from the messages loaded before the summariser call; the checkpoint
commits over those only, so messages committed meanwhile stay in the view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from tether import metrics
from tether.compaction import ledger, summary
from tether.compaction.cut import choose_tail_start, prune
from tether.compaction.policy import Budget
from tether.compaction.view import estimate, system_block, tail_messages
from tether.errors import TetherError
from tether.model import Checkpoint, Conversation, Message
from tether.store.base import Store
from tether.store.errors import ConflictError
from tether.upstream.base import Upstream

log = structlog.get_logger("tether.compaction")


class CompactionFailed(Exception):
    """The summariser could not produce a summary; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Compacted:
    conversation: Conversation
    checkpoint: Checkpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class _Cut:
    """One compaction's plan: the view it measured, and where the summary stops."""

    conv: Conversation
    checkpoint: Checkpoint | None
    visible: list[Message]  # the stored messages the view shows now
    new: Sequence[Message]
    start: int  # visible[start:] is the tail that stays
    before: int  # the view's size, on the trigger's scale
    estimated: int  # the same, as counted offline
    started: float
    turn_id: str | None

    @property
    def cut_seq(self) -> int:
        return self.visible[self.start - 1].seq

    @property
    def covers(self) -> int:
        return self.checkpoint.covers_through_seq if self.checkpoint else 0

    @property
    def pruned_through(self) -> int:
        return self.checkpoint.prune_through_seq if self.checkpoint else 0

    def measure(self, checkpoint: Checkpoint, messages: Sequence[Message]) -> int:
        """The view's size with `checkpoint`, on the trigger's scale."""
        text = system_block(self.conv.system_prompt, checkpoint)
        return max(1, self.before - (self.estimated - estimate(text, messages)))

    def draft(self, **fields: Any) -> Checkpoint:
        base: dict[str, Any] = {
            "epoch": self.conv.epoch + 1,
            "covers_through_seq": self.covers,
            "prune_through_seq": self.cut_seq,
            "summary": self.checkpoint.summary if self.checkpoint else None,
            "ledger": self.checkpoint.ledger if self.checkpoint else [],
            "tokens_before": self.before,
            "tokens_after": 0,
            "model": None,
            "prompt_version": summary.PROMPT_VERSION,
            "stats": {},
        }
        return Checkpoint(**{**base, **fields})

    def ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


async def compact(
    store: Store,
    upstream: Upstream,
    conv: Conversation,
    checkpoint: Checkpoint | None,
    stored: Sequence[Message],
    new: Sequence[Message],
    budget: Budget,
    model: str,
    min_tail_messages: int,
    turn_id: str | None = None,
    force: bool = False,
    current_tokens: int | None = None,
) -> Compacted | None:
    """Compact `conv` (whose messages after the current watermark are `stored`; `new` are the
    request's uncommitted messages, always kept). None if there is nothing to compact.

    `current_tokens` is the view's size as the trigger measured it (the upstream's last reported
    usage plus what was added since); the savings are applied to it so before/after stay on
    the scale the policy uses."""
    started = time.perf_counter()
    visible = tail_messages(stored, checkpoint)
    estimated = estimate(system_block(conv.system_prompt, checkpoint), [*visible, *new])
    before = current_tokens or estimated
    start = choose_tail_start([*visible, *new], budget.tail_tokens, min_tail_messages)
    start = min(start, len(visible))
    if start == 0:
        log.info("compaction.nothing_to_cut", conversation=conv.id, tokens=before)
        return None
    cut = _Cut(
        conv=conv,
        checkpoint=checkpoint,
        visible=visible,
        new=new,
        start=start,
        before=before,
        estimated=estimated,
        started=started,
        turn_id=turn_id,
    )
    if cut.cut_seq > cut.pruned_through:  # the cheap stage first
        pruned = _pruned(cut, budget, force)
        if pruned is not None:
            return await _commit(store, conv, pruned)
    return await _commit(store, conv, await _summarised(cut, upstream, stored, budget, model))


def _pruned(cut: _Cut, budget: Budget, force: bool) -> Checkpoint | None:
    """Stub old tool outputs and shorten old tool arguments; the checkpoint if that is enough."""
    trial = cut.draft()
    after = cut.measure(trial, [*prune(cut.visible, cut.cut_seq), *cut.new])
    if after > budget.limit or force or after >= cut.before:
        return None
    stats = {"kind": "prune", "saved": round(1 - after / cut.before, 4), "ms": round(cut.ms(), 2)}
    return replace(trial, tokens_after=after, stats=stats, turn_id=cut.turn_id)


async def _summarised(
    cut: _Cut, upstream: Upstream, stored: Sequence[Message], budget: Budget, model: str
) -> Checkpoint:
    """Summarise the head (after the cheap stage) into a new checkpoint."""
    head = cut.visible[: cut.start]
    span = prune(head, cut.cut_seq)
    summary_budget = budget.summary_tokens(sum(m.tokens for m in span))
    # 0.8: the summariser's tokenizer may count up to a fifth more than ours
    max_input = int(0.8 * (budget.usable - 2 * summary_budget - summary.system_tokens())) - 32
    if max_input < 64:
        raise CompactionFailed(f"a {budget.window}-token window is too small to summarise in")
    text = cut.checkpoint.summary if cut.checkpoint else None
    calls, llm_ms = 0, 0.0
    # building requests (redaction) and the ledger are CPU work on long spans: off the loop
    pieces = await asyncio.to_thread(summary.chunks, span, max_input)
    try:
        for piece in pieces:
            request = await asyncio.to_thread(
                summary.summariser_request, model, text, piece, summary_budget
            )
            llm_started = time.perf_counter()
            response = await upstream.complete(request)
            llm_ms += (time.perf_counter() - llm_started) * 1000
            text = summary.summary_from_response(response)
            calls += 1
    except (TetherError, ValueError) as exc:
        log.warning("compaction.summariser_failed", conversation=cut.conv.id, error=str(exc))
        raise CompactionFailed(str(exc)) from exc
    originals = [m for m in stored if cut.covers < m.seq <= cut.cut_seq and m.role != "system"]
    found = await asyncio.to_thread(lambda: ledger.extract(summary.span_text(originals)))
    result = cut.draft(
        covers_through_seq=cut.cut_seq,
        prune_through_seq=max(cut.cut_seq, cut.pruned_through),
        summary=text,
        ledger=ledger.merge_ledgers(cut.checkpoint.ledger if cut.checkpoint else [], found),
        model=model,
    )
    after = cut.measure(result, [*cut.visible[cut.start :], *cut.new])
    stats = {
        "kind": "summary",
        "saved": round(1 - after / cut.before, 4) if cut.before else 0.0,
        "messages_summarised": len(head),
        "summariser_calls": calls,
        "ms": round(cut.ms() - llm_ms, 2),
        "llm_ms": round(llm_ms, 2),
    }
    return replace(result, tokens_after=after, stats=stats, turn_id=cut.turn_id)


async def _commit(store: Store, conv: Conversation, checkpoint: Checkpoint) -> Compacted | None:
    try:
        updated = await store.commit_checkpoint(conv.pk, checkpoint)
    except ConflictError as exc:
        log.info("compaction.lost_race", conversation=conv.id, reason=str(exc))
        return None
    log.info(
        "compaction.done",
        conversation=conv.id,
        epoch=checkpoint.epoch,
        kind=checkpoint.stats.get("kind"),
        covers_through_seq=checkpoint.covers_through_seq,
        tokens_before=checkpoint.tokens_before,
        tokens_after=checkpoint.tokens_after,
    )
    metrics.COMPACTIONS.labels(str(checkpoint.stats.get("kind") or "summary")).inc()
    saved = (checkpoint.tokens_before or 0) - (checkpoint.tokens_after or 0)
    metrics.TOKENS_SAVED.inc(max(0, saved))
    return Compacted(updated, checkpoint)
