"""Calling the model: the upstream body (the cached view spliced in as ready JSON), then the
answer as one reply or as a stream of deltas, each published as a turn event; then the commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson

from tether.compaction.view import inline_system, system_block, upstream_message
from tether.engine.commit import commit
from tether.engine.events import Finished, TextDelta, ToolCallDelta, TurnEvent, Usage
from tether.engine.merge import INSTRUCTION_ROLES
from tether.engine.messages import assistant_message, estimated_usage
from tether.engine.validate import pending_after, validate_sequence
from tether.errors import TetherError
from tether.upstream.assemble import Assembled
from tether.upstream.base import Chunk

if TYPE_CHECKING:
    from tether.engine.turn import TurnRun


def upstream_body(run: TurnRun) -> tuple[dict[str, Any], frozenset[str]]:
    """The request to the upstream, and the tool calls its view leaves pending."""
    target = run.target
    assert target is not None
    sent = _prepared(run)
    if sent is None:
        view = target.view()
        # the stored part was checked when it was committed: check what is new against it
        fresh = sum(1 for m in target.plan.new if m.role not in INSTRUCTION_ROLES)
        pending = validate_sequence(
            view[len(view) - fresh :], pending_after(view[: len(view) - fresh])
        )
        inline = run.deps.settings.upstream_system_role == "inline"
        messages: Any = inline_system(view) if inline else view
    else:
        messages, pending = sent
    return {**run.req.params, "model": run.record.model, "messages": messages}, pending


def _prepared(run: TurnRun) -> tuple[orjson.Fragment, frozenset[str]] | None:
    """The view as JSON, the stored part as the cache keeps it ready (no per-message work),
    and the tool calls left pending; None where that part does not apply (a new or forked
    conversation, compacted during this turn, or the system text inlined)."""
    target = run.target
    assert target is not None
    stored = target.stored
    if (
        stored is None
        or target.creates is not None
        or stored.checkpoint is not target.checkpoint
        or run.deps.settings.upstream_system_role == "inline"
    ):
        return None
    fresh = [upstream_message(m) for m in target.plan.new if m.role not in INSTRUCTION_ROLES]
    pending = validate_sequence(fresh, stored.pending)
    system = system_block(target.plan.system_prompt, target.checkpoint)
    parts = [orjson.dumps({"role": "system", "content": system})] if system else []
    if stored.rendered:
        parts.append(stored.rendered)
    parts.extend(orjson.dumps(m) for m in fresh)
    return orjson.Fragment(b"[" + b",".join(parts) + b"]"), pending


@asynccontextmanager
async def deadline(run: TurnRun) -> AsyncIterator[None]:
    """One total deadline per turn (TETHER_MAX_TURN_SECONDS from its start) for the model's
    answer; the commit after it is never cut short."""
    limit = run.deps.settings.max_turn_seconds
    remaining = run.record.started_at + limit - time.time()
    try:
        async with asyncio.timeout(max(0.0, remaining)):
            yield
    except TimeoutError:
        raise TetherError(
            504,
            "turn_deadline_exceeded",
            f"the turn took longer than {limit:g} s (TETHER_MAX_TURN_SECONDS); nothing was stored",
        ) from None


async def complete(run: TurnRun, body: dict[str, Any], pending: frozenset[str]) -> None:
    """The answer in one piece."""
    assert run.deps.upstream is not None
    async with deadline(run):
        response = await run.deps.upstream.complete(body)
    run.record.first_token_at = time.time()
    choices = response.get("choices") or [{}]
    usage = response.get("usage")
    reply = assistant_message(
        choices[0].get("message") or {}, (usage or {}).get("completion_tokens")
    )
    run.record.usage = usage
    finished = Finished(
        info=run.info(),
        reply=reply,
        finish_reason=choices[0].get("finish_reason") or "stop",
        model=response.get("model") or run.record.model or "",
        response=response,
    )
    tail = run.req.projection.render(finished)
    await commit(run, finished, pending, tail)
    run.final_headers = run.req.projection.headers(finished.info)
    run.result.set_result(tail[-1])


async def stream(run: TurnRun, body: dict[str, Any], pending: frozenset[str]) -> None:
    """The answer as it is written: each chunk published as a delta; the end after the commit."""
    assert run.deps.upstream is not None and run.target is not None
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    acc = Assembled()
    async with deadline(run):
        async for chunk in run.deps.upstream.stream(body):
            if run.record.first_token_at is None:
                await run.first_token()
            run.publish(_delta(acc, chunk))
    usage = acc.usage
    reply = assistant_message(acc.message(), (usage or {}).get("completion_tokens"))
    if usage is None:
        # asked for (stream_options.include_usage) but not sent: llama.cpp's Python server
        # ignores it. The turn's record gets Tether's own counts, marked as estimates.
        usage = estimated_usage(run.target.prompt_tokens(), reply.tokens)
        run.publish(Usage(usage=usage, estimated=True))
    run.record.usage = usage
    finished = Finished(
        info=run.info(),
        reply=reply,
        finish_reason=acc.finish_reason or "stop",
        model=acc.model or run.record.model or "",
    )
    tail = run.req.projection.render(finished)
    await commit(run, finished, pending, tail)
    if not run.ready.done():  # an upstream that streamed no chunk at all
        run.ready.set_result(finished.info)
    run.out.publish(tail)


def _delta(acc: Assembled, chunk: Chunk) -> TurnEvent:
    text, calls = acc.add(chunk.data)
    if calls:
        return ToolCallDelta(calls=calls, chunk=chunk)
    if not chunk.data.get("choices") and chunk.data.get("usage"):
        return Usage(usage=chunk.data["usage"], estimated=False, chunk=chunk)
    return TextDelta(text=text, chunk=chunk)
