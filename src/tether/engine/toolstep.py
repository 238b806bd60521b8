"""The tool step of the agent loop: which of the model's calls Tether answers (the server tools
the turn offers; calls to server tools it does not offer get an error result, never a run) and
which go back to the client, then Tether's calls run concurrently, each journaled as it
completes and announced as a turn event."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from tether import metrics
from tether.compaction.ledger import redact
from tether.engine.events import ToolAwaiting, ToolFinished, ToolStarted
from tether.engine.messages import with_tokens
from tether.model import Message, ToolStep
from tether.tools.base import Caller, ToolOutput
from tether.tools.registry import Ran

if TYPE_CHECKING:
    from tether.engine.turn import TurnRun

log = structlog.get_logger("tether.tools")

MAX_JOURNALED_ARGUMENTS = 4000


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    server: list[dict[str, Any]]  # the calls Tether answers
    client: list[dict[str, Any]]  # the calls to the client's own tools


def call_name(call: dict[str, Any]) -> str:
    return str((call.get("function") or {}).get("name") or "")


def split(run: TurnRun, calls: list[dict[str, Any]], offering: bool) -> Split:
    """`offering`: server tools were offered in this model call (not past the round cap)."""
    known = run.deps.tools.available() if run.deps.tools is not None else {}
    server: list[dict[str, Any]] = []
    client: list[dict[str, Any]] = []
    for call in calls:
        name = call_name(call)
        if name in run.client_tools:
            client.append(call)
        elif name in known or (run.offer and offering):
            server.append(call)  # offered: runs; else the model is told it may not
        else:
            client.append(call)  # no server tool is involved: the client's, as before
    return Split(server=server, client=client)


async def run_calls(run: TurnRun, calls: list[dict[str, Any]], round_no: int) -> list[Message]:
    """Run Tether's calls of one assistant message at once; their `tool` messages, in order."""
    results = await asyncio.gather(*(_one(run, call, round_no) for call in calls))
    return list(results)


async def _one(run: TurnRun, call: dict[str, Any], round_no: int) -> Message:
    name = call_name(call)
    call_id = str(call.get("id") or "")
    raw = str((call.get("function") or {}).get("arguments") or "")
    shown_args = redact(raw)[:MAX_JOURNALED_ARGUMENTS]
    spec = run.offer.get(name)
    source = spec.source if spec is not None else "none"
    if spec is None or run.deps.tools is None:
        ran = _refusal(
            f"error: the tool {name!r} is not available to this conversation; nothing was run. "
            f"Available tools: {', '.join(sorted(run.offer)) or 'none'}",
            "not_offered",
            time.time(),
        )
    else:
        denied = None
        if spec.approval:
            denied = await _approval(run, call_id, name, shown_args, round_no)
        if denied is None:
            run.publish(
                ToolStarted(round=round_no, call_id=call_id, name=name, arguments=shown_args)
            )
            run.tools_started += 1
        try:
            caller = Caller(tenant_id=run.req.tenant_id, conversation_id=_conversation(run))
            ran = denied or await run.deps.tools.run(spec, raw, caller)
        except asyncio.CancelledError:  # the turn was stopped (deadline, cancel, shutdown)
            gone = _refusal(
                "interrupted: the turn was stopped during the call", "interrupted", time.time()
            )
            await asyncio.shield(_journal(run, call_id, name, source, shown_args, gone, round_no))
            raise
    await _journal(run, call_id, name, source, shown_args, ran, round_no)
    ms = round((ran.finished_at - ran.started_at) * 1000, 1)
    run.publish(
        ToolFinished(
            round=round_no,
            call_id=call_id,
            name=name,
            status=ran.status,
            ms=ms,
            output_chars=ran.output_chars,
        )
    )
    log.info("tool.ran", turn_id=run.record.id, tool=name, status=ran.status, ms=ms)
    metrics.TOOL_CALLS.labels(ran.status).inc()
    return with_tokens(Message(role="tool", content=ran.output.text, tool_call_id=call_id))


def _refusal(text: str, status: str, started: float) -> Ran:
    return Ran(
        output=ToolOutput(text=text, error=True),
        status=status,
        output_chars=len(text),
        started_at=started,
        finished_at=time.time(),
    )


async def _approval(run: TurnRun, call_id: str, name: str, args: str, round_no: int) -> Ran | None:
    """Wait for a person's decision; None when approved, else the denial the model reads."""
    timeout = run.deps.settings.approval_timeout
    run.publish(
        ToolAwaiting(round=round_no, call_id=call_id, name=name, arguments=args, timeout=timeout)
    )
    target = run.target
    named = {run.req.conversation_id or "", target.conversation_id if target else ""} - {""}
    started = time.time()
    run.awaiting += 1
    run.out.status = "awaiting_approval"
    log.info("tool.awaiting_approval", turn_id=run.record.id, call_id=call_id, tool=name)
    try:
        decision = await run.deps.approvals.wait(
            tenant_id=run.req.tenant_id,
            conversation_ids=frozenset(named),
            turn_id=run.record.id,
            call_id=call_id,
            tool=name,
            arguments=args,
            timeout=timeout,
        )
    finally:
        run.awaiting -= 1
        if not run.awaiting:
            run.out.status = "running"
    log.info("tool.approval", turn_id=run.record.id, call_id=call_id, decision=decision)
    if decision == "approve":
        return None
    if decision == "deny":
        text = f"error: a person denied this call of {name}; nothing was run"
    else:
        text = f"error: no approval for this call of {name} within {timeout:g} s; nothing was run"
    return _refusal(text, "denied", started)


def _conversation(run: TurnRun) -> str | None:
    """The stored conversation the turn runs on (None: the turn creates it)."""
    target = run.target
    if target is not None and target.creates is None and target.conv is not None:
        return target.conv.id
    return None


async def _journal(
    run: TurnRun, call_id: str, name: str, source: str, args: str, ran: Ran, round_no: int
) -> None:
    if not run.req.store:
        return
    conversation_id = _conversation(run)
    step = ToolStep(
        turn_id=run.record.id,
        call_id=call_id,
        round=round_no,
        tool=name,
        source=source,
        arguments=args,
        status=ran.status,
        output_chars=ran.output_chars,
        started_at=ran.started_at,
        finished_at=ran.finished_at,
        tenant_id=run.req.tenant_id,
        conversation_id=conversation_id,
    )
    try:
        await run.deps.store.record_tool_step(step)
    except Exception:
        log.exception("tool.journal_failed", turn_id=run.record.id, call_id=call_id)
