"""Compaction inside a turn, and what to do when the model's window is exceeded anyway: believe
the window the upstream states, compact and retry, or say plainly that it cannot fit."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import structlog

from tether.compaction.policy import Budget
from tether.compaction.view import estimate
from tether.engine.compact import CompactionFailed, compact
from tether.engine.deps import Deps
from tether.engine.target import Target, budget_for
from tether.errors import TetherError
from tether.model import Checkpoint, Turn

if TYPE_CHECKING:
    from tether.engine.turn import TurnRun

log = structlog.get_logger("tether.turn")

_WINDOW_IN_MESSAGE = re.compile(
    r"(?:maximum context length|context (?:length|window|size))(?: is| of)?\s*(\d{3,9})", re.I
)


async def compact_now(
    deps: Deps, target: Target, budget: Budget, turn: Turn, force: bool
) -> Checkpoint | None:
    """Compact the turn's conversation; the new checkpoint (the target now built on it), or
    None when there was nothing to compact. A failed summary changes nothing; if the view does
    not fit the model then, the turn fails with context_length_exceeded."""
    assert deps.upstream is not None and target.conv is not None
    try:
        result = await compact(
            deps.store,
            deps.upstream,
            target.conv,
            target.checkpoint,
            target.plan.history,
            [m for m in target.plan.new if m.role != "system"],
            budget,
            deps.settings.compaction_model or target.model,
            deps.settings.compaction_min_tail_messages,
            turn.id,
            force,
            target.prompt_tokens(),
        )
    except CompactionFailed as exc:
        turn.notes = {**(turn.notes or {}), "compaction": f"failed, nothing changed: {exc}"}
        system, messages = target.view_messages()
        tokens = estimate(system, messages)
        if tokens > budget.usable:
            raise TetherError(
                400,
                "context_length_exceeded",
                f"conversation {target.conversation_id!r} needs ~{tokens} tokens but the "
                f"model takes {budget.usable}, and compaction failed ({exc}). Retry when "
                "the summariser is reachable, use a model with a larger window, or start a "
                "new conversation.",
                param="messages",
            ) from exc
        return None
    if result is None:
        return None
    target.conv, target.checkpoint = result.conversation, result.checkpoint
    return result.checkpoint


def learn_window(deps: Deps, model: str, message: str, run: TurnRun) -> Budget:
    """The upstream said the prompt is too long: believe it. Its stated window (or, if it
    names none, 80% of what was just sent) is used for this model from now on."""
    params = run.req.params
    match = _WINDOW_IN_MESSAGE.search(message)
    if match:
        window = int(match.group(1))
    else:
        assert run.target is not None
        system, messages = run.target.view_messages()
        current = budget_for(deps.settings, model, params, deps.windows.get(model))
        window = int(0.8 * estimate(system, messages)) + current.reserved
    deps.windows[model] = window
    log.warning("upstream.window_learned", model=model, window=window)
    return budget_for(deps.settings, model, params, window)


def overflowed(exc: TetherError, target: Target) -> TetherError:
    """Name the conversation and the way out when the model's window is exceeded."""
    if exc.code != "context_length_exceeded" or target.conversation_id in exc.message:
        return exc
    return TetherError(
        400,
        "context_length_exceeded",
        f"conversation {target.conversation_id!r} does not fit the model's context window "
        f"({exc.message}). Compaction could not make it fit: start a new conversation or use a "
        "model with a larger window.",
        param="messages",
    )
