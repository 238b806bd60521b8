"""A summary of messages that belong to no stored conversation (`POST /v1/responses/compact`
with only `input`): the compaction summariser's prompt and model, run over the messages in
pieces that fit the window, nothing stored. A stored conversation is compacted as always
(engine/inspect.py: a checkpoint)."""

from __future__ import annotations

import asyncio
from typing import Any

from tether.compaction import summary
from tether.engine.messages import with_tokens
from tether.engine.service import Engine
from tether.engine.target import budget_for
from tether.errors import TetherError
from tether.model import Message


async def summarise(
    engine: Engine, model: str, messages: list[Message]
) -> tuple[str, dict[str, int]]:
    """The summary of `messages` and the summariser's usage, summed over its calls."""
    if engine.upstream is None:
        raise TetherError(503, "upstream_not_configured", "no upstream to summarise with")
    counted = [with_tokens(m) for m in messages]
    budget = budget_for(engine.settings, model, {}, engine.windows.get(model))
    summary_budget = budget.summary_tokens(sum(m.tokens for m in counted))
    max_input = int(0.8 * (budget.usable - 2 * summary_budget - summary.system_tokens())) - 32
    if max_input < 64:
        raise TetherError(
            400, "context_length_exceeded", f"a {budget.window}-token window is too small"
        )
    text: str | None = None
    usage = {"input_tokens": 0, "output_tokens": 0}
    pieces = await asyncio.to_thread(summary.chunks, counted, max_input)
    compaction_model = engine.settings.compaction_model or model
    for piece in pieces:
        request = summary.summariser_request(compaction_model, text, piece, summary_budget)
        response: dict[str, Any] = await engine.upstream.complete(request)
        try:
            text = summary.summary_from_response(response)
        except ValueError as exc:
            raise TetherError(502, "compaction_failed", f"the summariser failed: {exc}") from exc
        used = response.get("usage") or {}
        usage["input_tokens"] += int(used.get("prompt_tokens") or 0)
        usage["output_tokens"] += int(used.get("completion_tokens") or 0)
    return text or "", usage
