"""One turn as one object, its steps top to bottom: resolve → queue → load and merge →
compact? → call the model → commit → deliver (engine/call.py, engine/commit.py).

A turn runs in its own task and holds its conversation's lock, so it completes and commits even
if the client that started it goes away. It publishes typed events (engine/events.py) that the
request's protocol adapter renders into its stream (`out`); a JSON turn's body is `result`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog

from tether import metrics
from tether.compaction.policy import Budget, should_compact, thrashing
from tether.coordination.stream import TurnStream
from tether.engine import idempotency, loop
from tether.engine.deps import Deps
from tether.engine.events import Compacted, Failed, Started, TurnEvent
from tether.engine.load import load_target
from tether.engine.matching import HistoryProbe
from tether.engine.merge import mode_of
from tether.engine.overflow import compact_now
from tether.engine.request import TurnInfo, TurnRequest, etag, matches
from tether.engine.resolve import resolve
from tether.engine.target import Target, budget_for
from tether.errors import TetherError
from tether.model import Message, Turn
from tether.tools.base import ToolSpec

log = structlog.get_logger("tether.turn")


@dataclass(slots=True)
class Outcome:
    """What compaction did during this turn."""

    compacted: bool = False
    tokens_before: int | None = None
    tokens_after: int | None = None


class TurnRun:
    def __init__(self, deps: Deps, req: TurnRequest, record: Turn) -> None:
        loop = asyncio.get_running_loop()
        self.deps = deps
        self.req = req
        self.record = record
        self.out = TurnStream(stream=req.stream, tenant_id=req.tenant_id, turn_id=record.id)
        self.out.stopper = self.stop
        self.target: Target | None = None
        self.outcome = Outcome()
        self.ready: asyncio.Future[TurnInfo] = loop.create_future()  # where it runs
        self.result: asyncio.Future[bytes] = loop.create_future()  # a JSON turn's body
        self.final_headers: dict[str, str] = {}  # set with `result`
        self.task: asyncio.Task[None] | None = None
        self.committing = False  # the commit began: the turn can no longer be cancelled
        self.cancel_reason: str | None = None  # cancelled | shutdown
        # server tools: what this turn offers (by the name the model sees), the names of the
        # client's own tools, and this turn's rounds so far (assistant calls, tool results)
        client = req.params.get("tools")
        self.client_tools = frozenset(
            str((t.get("function") or {}).get("name"))
            for t in (client if isinstance(client, list) else ())
            if isinstance(t, dict)
        )
        registry = deps.tools
        offer = registry.offered(req.tenant_id, req.tools) if registry is not None else {}
        self.offer: dict[str, ToolSpec] = {
            n: s for n, s in offer.items() if n not in self.client_tools
        }
        self.tool_mode = bool(self.offer) or bool(registry is not None and registry.available())
        self.steps: list[Message] = []
        self.pruned: set[int] = set()  # indices of `steps` shown to the model as stubs
        self.awaiting = 0  # tool calls waiting for approval now
        self.tools_started = 0  # server tool calls begun (their side effects may have happened)

    # -- the steps -------------------------------------------------------------------------
    async def run(self) -> None:
        req = self.req
        try:
            full = mode_of(req.messages, req.history) == "replay"
            probe = HistoryProbe(req.messages) if full else None
            lock_id = await resolve(self.deps, req, probe)
            reject = req.concurrency == "reject"
            asked = time.perf_counter()
            async with self.deps.coordinator.hold(
                req.tenant_id, lock_id or self.record.id, reject=reject
            ):
                metrics.QUEUE_SECONDS.observe(time.perf_counter() - asked)
                self.target = await self.load(lock_id, probe)
                budget = await self.compact_first()
                self.announce()
                await self.answer(budget)
        except asyncio.CancelledError:
            await self.fail(self.stopped_error())
        except Exception as exc:
            told = self.deps.errors(exc)
            if told is None:
                log.exception("turn.crashed", turn_id=self.record.id)
                told = TetherError(
                    500, "internal_error", f"turn {self.record.id} failed unexpectedly"
                )
            await self.fail(told)
        finally:
            metrics.TURNS.labels(self.record.status).inc()
            self.out.close(self.record.status)
            self.deps.coordinator.finish(self.out)
            self.task = None  # what resuming needs is the stream; let the task go

    async def load(self, lock_id: str | None, probe: HistoryProbe | None) -> Target:
        """Read the conversation (or its cached view) and merge the request into it."""
        req, settings = self.req, self.deps.settings
        target = await load_target(
            self.deps,
            req,
            lock_id,
            self.record.model or "",
            probe,
            settings.dangling_tool_calls == "close",
        )
        added = len(target.plan.new)
        if added > settings.max_messages:
            raise TetherError(
                413,
                "too_many_messages",
                f"the request adds {added} messages; the limit is {settings.max_messages} "
                "(TETHER_MAX_MESSAGES)",
                param="messages",
            )
        if target.plan.closed:
            closed = list(target.plan.closed)
            self.note("dangling_tool_calls", closed)
            log.info("turn.dangling_closed", turn_id=self.record.id, calls=closed)
        self.out.conversation_id = target.conversation_id
        current = target.conv.last_seq if target.conv is not None else 0
        if req.if_match is not None and not matches(req.if_match, current):
            raise TetherError(
                412,
                "precondition_failed",
                f"the conversation is at version {etag(current)}, not {req.if_match}; "
                "reload it and retry",
                headers={"ETag": etag(current)},
            )
        return target

    async def compact_first(self) -> Budget:
        """Compact before the call when the view is over the threshold (or asked to)."""
        req, target = self.req, self.target
        assert target is not None
        model = self.record.model or ""
        budget = budget_for(self.deps.settings, model, req.params, self.deps.windows.get(model))
        if not target.can_compact or req.compaction == "off":
            return budget
        tokens = target.prompt_tokens()
        if not should_compact(tokens, budget, req.compaction):
            return budget
        if req.compaction == "auto" and target.conv is not None and tokens <= budget.usable:
            recent = await self.deps.store.list_checkpoints(target.conv.pk)
            if thrashing([float(c.stats.get("saved", 1.0)) for c in recent[-2:]]):
                self.note(
                    "compaction",
                    "paused: the last two compactions each saved under 10%; it resumes when "
                    "the view no longer fits the model, or with 'X-Tether-Compaction: now'",
                )
                log.warning("compaction.paused", conversation=target.conversation_id)
                return budget
        await self.compact(budget, req.compaction == "now")
        return budget

    def announce(self) -> None:
        """A JSON turn is ready now (a stream at its first token); compaction is told."""
        if not self.req.stream:
            info = self.info()
            self.ready.set_result(info)
            self.publish(Started(info=info))
        if self.outcome.compacted:
            assert self.target is not None
            self.publish(
                Compacted(
                    conversation_id=self.target.conversation_id,
                    epoch=self.target.epoch,
                    tokens_before=self.outcome.tokens_before,
                    tokens_after=self.outcome.tokens_after,
                )
            )

    async def answer(self, budget: Budget) -> None:
        """Call the model, run Tether's tools and call it again until it answers; commit."""
        await loop.answer(self, budget)

    async def compact(self, budget: Budget, force: bool) -> bool:
        """Compact the conversation now; whether a checkpoint was made."""
        assert self.target is not None
        result = await compact_now(self.deps, self.target, budget, self.record, force)
        if result is None:
            return False
        self.record.compacted = self.outcome.compacted = True
        if self.outcome.tokens_before is None:
            self.outcome.tokens_before = result.tokens_before
        self.outcome.tokens_after = result.tokens_after
        return True

    # -- what the steps share ---------------------------------------------------------------
    def publish(self, event: TurnEvent) -> None:
        self.out.publish(self.req.projection.render(event))

    async def first_token(self) -> None:
        """A stream's first chunk: its headers go out now (an upstream failure before this is a
        plain HTTP error), and the turn is on record from now on."""
        target = self.target
        assert target is not None
        self.record.first_token_at = time.time()
        if self.req.store and target.can_compact and target.conv is not None:
            # the client learns the turn's id now: a crash leaves it running, marked incomplete
            # at start-up. (A JSON turn's id is only known with its result: recorded then.)
            await self.deps.store.record_turn(target.conv.pk, self.record)
        info = self.info()
        self.ready.set_result(info)
        self.publish(Started(info=info))

    def info(self, produced: int = 1) -> TurnInfo:
        """Where the turn runs; `produced`: the messages it adds after the request's own."""
        target = self.target
        assert target is not None
        if target.creates is not None:
            base = target.plan.fork_seq or 0
        else:
            base = target.conv.last_seq if target.conv is not None else 0
        return TurnInfo(
            conversation_id=target.conversation_id,
            turn_id=self.record.id,
            epoch=target.epoch,
            forked_from=target.forked_from,
            compacted=self.outcome.compacted,
            tokens_before=self.outcome.tokens_before,
            tokens_after=self.outcome.tokens_after,
            version=base + len(target.plan.new) + produced,
        )

    def note(self, key: str, value: Any) -> None:
        self.record.notes = {**(self.record.notes or {}), key: value}

    # -- stopping and failing ---------------------------------------------------------------
    def stop(self, reason: str) -> bool:
        """Stop a turn that has not started committing (once it has, it completes)."""
        if self.committing or self.task is None or self.task.done():
            return False
        self.cancel_reason = reason
        self.task.cancel()
        return True

    def stopped_error(self) -> TetherError:
        if self.cancel_reason == "shutdown":
            return TetherError(
                503,
                "server_shutting_down",
                f"turn {self.record.id} was stopped: the server shut down before it finished",
                headers={"Retry-After": "5"},
            )
        return TetherError(409, "turn_cancelled", f"turn {self.record.id} was cancelled")

    async def fail(self, error: TetherError) -> None:
        turn, target = self.record, self.target
        if self.tools_started:
            turn.status = "incomplete"  # tools ran: the journal says which, nothing is stored
        elif self.cancel_reason == "cancelled":
            turn.status = "cancelled"
        elif self.req.stream and turn.first_token_at is not None:
            turn.status = "incomplete"  # the client saw part of an answer that was not stored
        else:
            turn.status = "failed"
        turn.finished_at = time.time()
        turn.error = error.body()["error"]
        log.warning(
            "turn.ended", turn_id=turn.id, status=turn.status, code=error.code, http=error.status
        )
        try:
            await idempotency.release(self.deps.store, self.req.idempotency)
        except Exception:
            log.exception("turn.release_key_failed", turn_id=turn.id)
        if self.req.store and target is not None and target.can_compact and target.conv:
            try:
                await self.deps.store.record_turn(target.conv.pk, turn)
            except Exception:
                log.exception("turn.record_failed", turn_id=turn.id)
        if self.req.stream:  # ends the stream (resumers read it too)
            self.publish(Failed(error=error))
        if not self.ready.done():
            self.ready.set_exception(error)
        elif not self.req.stream:
            self.result.set_exception(error)
