"""What operators and clients can ask about a conversation's context, and compaction on demand."""

from __future__ import annotations

from typing import Any

from tether.compaction.view import estimate, render, system_block, tail_messages
from tether.engine.compact import CompactionFailed, compact
from tether.engine.service import Engine
from tether.engine.target import budget_for
from tether.errors import TetherError
from tether.model import Checkpoint, Conversation


def checkpoint_json(c: Checkpoint) -> dict[str, Any]:
    return {
        "epoch": c.epoch,
        "covers_through_seq": c.covers_through_seq,
        "prune_through_seq": c.prune_through_seq,
        "tokens_before": c.tokens_before,
        "tokens_after": c.tokens_after,
        "model": c.model,
        "prompt_version": c.prompt_version,
        "ledger_entries": len(c.ledger),
        "summary_chars": len(c.summary or ""),
        "stats": c.stats,
        "turn_id": c.turn_id,
        "created_at": c.created_at,
    }


async def context_report(engine: Engine, conv: Conversation, include_view: bool) -> dict[str, Any]:
    model = conv.model or engine.settings.default_model or ""
    budget = budget_for(engine.settings, model, {}, engine.windows.get(model))
    checkpoints = await engine.store.list_checkpoints(conv.pk)
    latest = checkpoints[-1] if checkpoints else None
    covers = latest.covers_through_seq if latest else 0
    stored = await engine.store.load_messages(conv.pk, after_seq=covers)
    system = system_block(conv.system_prompt, latest)
    messages = tail_messages(stored, latest)
    report: dict[str, Any] = {
        "object": "conversation.context",
        "conversation_id": conv.id,
        "model": model,
        "window": budget.window,
        "reserved_output": budget.reserved,
        "threshold": budget.threshold,
        "compact_above_tokens": budget.limit,
        "tokens": estimate(system, messages),
        "last_reported_prompt_tokens": conv.usage_prompt_tokens,
        "epoch": conv.epoch,
        "covers_through_seq": covers,
        "messages_total": conv.last_seq,
        "messages_in_view": len(messages),
        "checkpoints": [checkpoint_json(c) for c in checkpoints],
    }
    if include_view:
        report["view"] = render(system, messages)
        report["summary"] = latest.summary if latest else None
        report["ledger"] = latest.ledger if latest else []
    return report


async def compact_conversation(engine: Engine, conv: Conversation) -> dict[str, Any]:
    """Compact now, outside any turn. Turns may run meanwhile: the checkpoint only covers
    messages that existed when it began."""
    if engine.upstream is None:
        raise TetherError(503, "upstream_not_configured", "no upstream to summarise with")
    model = conv.model or engine.settings.default_model or ""
    checkpoint = await engine.store.latest_checkpoint(conv.pk) if conv.epoch else None
    stored = await engine.store.load_messages(
        conv.pk, after_seq=checkpoint.covers_through_seq if checkpoint else 0
    )
    try:
        result = await compact(
            engine.store,
            engine.upstream,
            conv,
            checkpoint,
            stored,
            [],
            budget_for(engine.settings, model, {}, engine.windows.get(model)),
            engine.settings.compaction_model or model,
            engine.settings.compaction_min_tail_messages,
            force=True,
        )
    except CompactionFailed as exc:
        raise TetherError(502, "compaction_failed", f"the summariser failed: {exc}") from exc
    if result is None:
        return {"compacted": False, "epoch": conv.epoch, "reason": "nothing before the tail"}
    engine.views.drop((conv.tenant_id, conv.id))  # the next turn reads the new checkpoint
    return {
        "compacted": True,
        "epoch": result.checkpoint.epoch,
        **checkpoint_json(result.checkpoint),
    }
