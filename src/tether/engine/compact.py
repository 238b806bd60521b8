"""Running one compaction: cheap stage first, then the summary; committed as a checkpoint.

The watermark is fixed from the messages loaded before the summariser call; the checkpoint
commits over those only, so messages committed meanwhile stay in the view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from tether.compaction import ledger, summary
from tether.compaction.cut import choose_tail_start, prune
from tether.compaction.policy import Budget
from tether.compaction.view import estimate, system_block, tail_messages
from tether.errors import TetherError
from tether.model import Checkpoint, Conversation, Message
from tether.store.base import ConflictError, Store
from tether.upstream.base import Upstream

log = structlog.get_logger("tether.compaction")


class CompactionFailed(Exception):
    """The summariser could not produce a summary; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Compacted:
    conversation: Conversation
    checkpoint: Checkpoint


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
    system = conv.system_prompt
    visible = tail_messages(stored, checkpoint)
    estimated = estimate(system_block(system, checkpoint), [*visible, *new])
    before = current_tokens or estimated

    def measure(system_text: str | None, messages: Sequence[Message]) -> int:
        return max(1, before - (estimated - estimate(system_text, messages)))

    start = choose_tail_start([*visible, *new], budget.tail_tokens, min_tail_messages)
    start = min(start, len(visible))
    if start == 0:
        log.info("compaction.nothing_to_cut", conversation=conv.id, tokens=before)
        return None
    head = visible[:start]
    cut_seq = head[-1].seq
    covers = checkpoint.covers_through_seq if checkpoint else 0
    pruned_through = checkpoint.prune_through_seq if checkpoint else 0
    epoch = conv.epoch + 1

    # the cheap stage: stub old tool outputs, shorten old tool arguments
    if cut_seq > pruned_through:
        pruned = prune(visible, cut_seq)
        trial = Checkpoint(
            epoch=epoch,
            covers_through_seq=covers,
            prune_through_seq=cut_seq,
            summary=checkpoint.summary if checkpoint else None,
            ledger=checkpoint.ledger if checkpoint else [],
            tokens_before=before,
            tokens_after=0,
            model=None,
            prompt_version=summary.PROMPT_VERSION,
            stats={},
        )
        after = measure(system_block(system, trial), [*pruned, *new])
        if after <= budget.limit and not force and after < before:
            stats = {
                "kind": "prune",
                "saved": round(1 - after / before, 4),
                "ms": round((time.perf_counter() - started) * 1000, 2),
            }
            return await _commit(store, conv, _replace_tokens(trial, after, stats, turn_id))
    span = prune(head, cut_seq)
    summary_budget = budget.summary_tokens(sum(m.tokens for m in span))
    # 0.8: the summariser's tokenizer may count up to a fifth more than ours
    max_input = int(0.8 * (budget.usable - 2 * summary_budget - summary.system_tokens())) - 32
    if max_input < 64:
        raise CompactionFailed(f"a {budget.window}-token window is too small to summarise in")
    text = checkpoint.summary if checkpoint else None
    calls = 0
    llm_ms = 0.0
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
        log.warning("compaction.summariser_failed", conversation=conv.id, error=str(exc))
        raise CompactionFailed(str(exc)) from exc
    originals = [m for m in stored if covers < m.seq <= cut_seq and m.role != "system"]
    found = await asyncio.to_thread(lambda: ledger.extract(summary.span_text(originals)))
    new_ledger = ledger.merge_ledgers(checkpoint.ledger if checkpoint else [], found)
    result = Checkpoint(
        epoch=epoch,
        covers_through_seq=cut_seq,
        prune_through_seq=max(cut_seq, pruned_through),
        summary=text,
        ledger=new_ledger,
        tokens_before=before,
        tokens_after=0,
        model=model,
        prompt_version=summary.PROMPT_VERSION,
        stats={},
    )
    after = measure(system_block(system, result), [*visible[start:], *new])
    total_ms = (time.perf_counter() - started) * 1000
    stats = {
        "kind": "summary",
        "saved": round(1 - after / before, 4) if before else 0.0,
        "messages_summarised": len(head),
        "summariser_calls": calls,
        "ms": round(total_ms - llm_ms, 2),
        "llm_ms": round(llm_ms, 2),
    }
    return await _commit(store, conv, _replace_tokens(result, after, stats, turn_id))


def _replace_tokens(
    c: Checkpoint, after: int, stats: dict[str, object], turn_id: str | None
) -> Checkpoint:
    return Checkpoint(
        epoch=c.epoch,
        covers_through_seq=c.covers_through_seq,
        prune_through_seq=c.prune_through_seq,
        summary=c.summary,
        ledger=c.ledger,
        tokens_before=c.tokens_before,
        tokens_after=after,
        model=c.model,
        prompt_version=c.prompt_version,
        stats=stats,
        turn_id=turn_id,
    )


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
    return Compacted(updated, checkpoint)
