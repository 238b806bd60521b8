"""The agent loop of one turn: model → Tether's tool calls → results → model …, until the model
answers without a server tool call (or past TETHER_MAX_TOOL_ROUNDS, asked without tools). Before
each model call after the first, the view with this turn's rounds is fitted to the budget: old
tool outputs of this turn are shown pruned first, then the history is compacted. The turn
commits once, at its end: every round's messages and the answer together."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from tether.compaction.policy import Budget
from tether.engine import call, toolstep
from tether.engine.call import Step
from tether.engine.commit import commit
from tether.engine.events import Finished, TextDelta, ToolCallDelta, TurnEvent
from tether.engine.fingerprint import TOOL_ROUND
from tether.engine.overflow import learn_window, overflowed
from tether.errors import TetherError
from tether.model import Message
from tether.upstream.base import Chunk

if TYPE_CHECKING:
    from tether.engine.turn import TurnRun

log = structlog.get_logger("tether.turn")

OVERFLOW_RETRIES = 2
PRUNED_ABOVE_TOKENS = 64  # this turn's older tool outputs above this are shown as a stub


async def answer(run: TurnRun, budget: Budget) -> None:
    rounds = 0
    cap = run.deps.settings.max_tool_rounds
    while True:
        offering = rounds < cap
        if rounds and not offering:
            run.note("tool_rounds", f"stopped at the limit of {cap} (TETHER_MAX_TOOL_ROUNDS)")
            log.warning("turn.tool_rounds_capped", turn_id=run.record.id, rounds=rounds)
        step, pending = await model_step(run, budget, offering)
        split = toolstep.split(run, step.reply.tool_calls or [], offering)
        if rounds or split.server:  # a turn with tool rounds: every call's usage summed
            _add_usage(run, step.usage)
        if not split.server:
            await finish(run, step, pending, [step.reply])
            return
        if not offering:  # past the cap and still calling: the calls are dropped, not run
            await finish(run, step, pending, [_without_calls(step.reply, cap)], dropped=True)
            return
        rounds += 1
        run.note("tool_rounds_run", rounds)
        if rounds == 1:
            await _on_record(run)
        async with call.deadline(run):
            results = await toolstep.run_calls(run, split.server, rounds)
        results = [_hidden(m, rounds) for m in results]  # the client never sees them
        if split.client:  # Tether answered its calls; the client's go back to it
            await finish(run, step, pending, [step.reply, *results], client=split.client)
            return
        run.steps.extend([_hidden(step.reply, rounds), *results])
        await fit(run, budget)


async def _on_record(run: TurnRun) -> None:
    """Before Tether's first tool runs, the turn is on record as running (a stream's already is,
    from its first token): a crash from here leaves it `incomplete` with its journal."""
    target = run.target
    assert target is not None
    if run.req.store and not run.req.stream and target.can_compact and target.conv is not None:
        await run.deps.store.record_turn(target.conv.pk, run.record)


async def model_step(run: TurnRun, budget: Budget, offering: bool) -> tuple[Step, frozenset[str]]:
    """One model call; a context-length refusal before any token compacts and retries (at
    most OVERFLOW_RETRIES times)."""
    target = run.target
    assert target is not None
    for attempt in range(OVERFLOW_RETRIES + 1):
        try:
            body, pending = call.upstream_body(run, offering)
            if run.req.stream:
                step = await call.stream(run, body, hold=run.tool_mode)
            else:
                step = await call.complete(run, body)
            return step, pending
        except TetherError as exc:
            retry = (
                exc.code == "context_length_exceeded"
                and attempt < OVERFLOW_RETRIES
                and (run.record.first_token_at is None or run.tool_mode)
                and run.req.compaction != "off"
                and target.can_compact
            )
            if retry:
                budget = learn_window(run.deps, run.record.model or "", exc.message, run)
            if not retry or not await run.compact(budget, True):
                raise overflowed(exc, target) from None
            log.info("turn.overflow_compacted", turn_id=run.record.id, attempt=attempt + 1)
    raise AssertionError("unreachable")


async def fit(run: TurnRun, budget: Budget) -> None:
    """Before the next model call: this turn's older tool outputs shown as stubs, then the
    history compacted, while the view is over the budget."""
    target = run.target
    assert target is not None
    if _tokens(run) <= budget.usable:
        return
    last_round = max(i for i, m in enumerate(run.steps) if m.role == "assistant")
    for i, m in enumerate(run.steps[:last_round]):
        if m.role == "tool" and m.tokens > PRUNED_ABOVE_TOKENS:
            run.pruned.add(i)
    if _tokens(run) > budget.usable and target.can_compact and run.req.compaction != "off":
        await run.compact(budget, True)
    log.info("turn.fitted", turn_id=run.record.id, pruned=len(run.pruned), tokens=_tokens(run))


def _tokens(run: TurnRun) -> int:
    assert run.target is not None
    steps = sum(m.tokens if i not in run.pruned else 16 for i, m in enumerate(run.steps))
    return run.target.prompt_tokens() + steps


def _add_usage(run: TurnRun, usage: dict[str, Any] | None) -> None:
    """Every model call's usage summed in the turn's notes (`usage_all_calls`): the turn's
    `usage`, like the response's, is the last call's (its prompt is the view's size)."""
    total = dict((run.record.notes or {}).get("usage_all_calls") or {})
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = (usage or {}).get(key)
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value
    total["calls"] = total.get("calls", 0) + 1
    run.note("usage_all_calls", total)


def _hidden(m: Message, round_no: int) -> Message:
    """A message of a server tool round, marked so: a client that resends its history never
    sends it back (engine/fingerprint.py: not history), the model still sees it."""
    return replace(m, extra={**(m.extra or {}), TOOL_ROUND: round_no})


def _without_calls(reply: Message, cap: int) -> Message:
    note = f"[stopped: the limit of {cap} tool rounds (TETHER_MAX_TOOL_ROUNDS) was reached]"
    return replace(reply, tool_calls=None, content=reply.content or note)


async def finish(
    run: TurnRun,
    step: Step,
    pending: frozenset[str],
    last: list[Message],
    client: list[dict[str, Any]] | None = None,
    dropped: bool = False,
) -> None:
    """The end of the turn: what the client sees of the last step, then the commit of every
    round's messages and `last`. `client`: the client's own calls of a message that called
    tools of both kinds (the rest Tether answered, in `last`)."""
    run.record.usage = step.usage
    produced = [*run.steps, *last]
    response = step.response
    if client is not None and response is not None:
        message = ((response.get("choices") or [{}])[0]).get("message")
        if isinstance(message, dict):
            message["tool_calls"] = client
    if dropped and response is not None:
        choice = (response.get("choices") or [{}])[0]
        choice["message"] = {"role": "assistant", "content": last[0].content}
        choice["finish_reason"] = "stop"
    if run.req.stream and run.tool_mode:
        _release(run, step, client, dropped, last[0])
    finished = Finished(
        info=run.info(len(produced)),
        reply=last[0] if client is None else replace(last[0], tool_calls=client),
        finish_reason="stop" if dropped else step.finish_reason,
        model=step.model,
        response=response,
    )
    tail = run.req.projection.render(finished)
    await commit(run, finished, pending, tail, produced)
    if run.req.stream:
        if not run.ready.done():  # an upstream that streamed no chunk at all
            run.ready.set_result(finished.info)
        run.out.publish(tail)
    else:
        run.final_headers = run.req.projection.headers(finished.info)
        run.result.set_result(tail[-1])


def _release(
    run: TurnRun, step: Step, client: list[dict[str, Any]] | None, dropped: bool, reply: Message
) -> None:
    """Publish what the stream held back of the last step: all of it when the client's tools
    alone were called; the client's calls only (one chunk) when Tether answered others; no
    calls when they were dropped at the cap (its note as text instead)."""
    if client is not None:
        calls = [{**c, "index": i} for i, c in enumerate(client)]
        run.publish(
            ToolCallDelta(calls=calls, chunk=call.synthetic_chunk(step, {"tool_calls": calls}))
        )
    elif dropped:
        run.publish(
            TextDelta(
                text=str(reply.content),
                chunk=call.synthetic_chunk(step, {"content": str(reply.content)}),
            )
        )
    for event in step.held:
        if isinstance(event, ToolCallDelta) and (client is not None or dropped):
            continue
        run.publish(_finish_as(event, "stop") if dropped else event)


def _finish_as(event: TurnEvent, reason: str) -> TurnEvent:
    """A held end chunk whose finish_reason must change (tool_calls → stop at the cap)."""
    if not isinstance(event, TextDelta) or not call.ends(event.chunk):
        return event
    chunk = event.chunk
    data = {
        **chunk.data,
        "choices": [
            {**c, "finish_reason": reason} if c.get("finish_reason") else c
            for c in chunk.data.get("choices") or ()
        ],
    }
    return replace(event, chunk=Chunk(raw=orjson.dumps(data), data=data))
