"""One turn, top to bottom: resolve → serialise → merge → compact? → view → upstream → commit →
deliver.

A turn runs in its own task and owns its conversation's lock, so it completes and commits even if
the client that started it goes away. The HTTP layer waits for `ready` (where the turn runs), then
reads `events` (streaming) or `result` (JSON).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import orjson
import structlog

from tether.compaction.policy import Budget, should_compact, thrashing
from tether.compaction.view import estimate, inline_system, system_block, upstream_message
from tether.config import Settings
from tether.engine.assemble import Assembled
from tether.engine.cache import CachedView, Lru, cached_view, extended
from tether.engine.catalog import ModelCatalog
from tether.engine.compact import CompactionFailed, compact
from tether.engine.context import Target, budget_for, load_target
from tether.engine.ids import is_server_minted, mint_turn_id
from tether.engine.locks import ConversationLocks
from tether.engine.matching import HistoryProbe, continued
from tether.engine.merge import INSTRUCTION_ROLES, mode_of
from tether.engine.reply import chunk_meta, estimated_usage, fill_required, history_after
from tether.engine.types import (
    RunningTurn,
    TurnInfo,
    TurnRequest,
    assistant_message,
    etag,
    matches,
)
from tether.engine.validate import pending_after, validate_sequence
from tether.errors import TetherError
from tether.model import Conversation, Message, TurnRecord
from tether.store.base import ConflictError, IdempotencyKey, Store, StoredResponse, TurnCommit
from tether.upstream.client import Upstream
from tether.upstream.wire import chat_message

log = structlog.get_logger("tether.turn")

DONE = b"[DONE]"
_WINDOW_IN_MESSAGE = re.compile(
    r"(?:maximum context length|context (?:length|window|size))(?: is| of)?\s*(\d{3,9})", re.I
)
OVERFLOW_RETRIES = 2


@dataclass(slots=True)
class Outcome:
    """What compaction did during this request."""

    compacted: bool = False
    tokens_before: int | None = None
    tokens_after: int | None = None


class Engine:
    def __init__(self, store: Store, upstream: Upstream | None, settings: Settings) -> None:
        self.store = store
        self.upstream = upstream
        self.settings = settings
        self.locks = ConversationLocks(settings.queue_timeout)
        self._tasks: set[asyncio.Task[None]] = set()
        self.windows: dict[str, int] = {}  # context windows learned from the upstream
        self.catalog = ModelCatalog(upstream, settings.unknown_models == "reject")
        self.views: Lru[tuple[str, str], CachedView] = Lru(
            settings.view_cache_messages, lambda v: len(v.messages) + 1, stamped=True
        )
        self.canonical: Lru[tuple[str, str], str] = Lru(65536)  # (tenant, any id) → its id
        self.running: dict[str, RunningTurn] = {}  # turn id → a turn in progress here
        # finished streams stay resumable (by Last-Event-ID) while they fit this many bytes
        self.recent: Lru[str, RunningTurn] = Lru(settings.resume_buffer_bytes, _log_size)
        self.draining = False  # shutting down: no new turns

    async def start(self, req: TurnRequest) -> tuple[RunningTurn, TurnInfo]:
        """Start a turn; return once it knows where it runs (or raise its error)."""
        if self.draining:
            raise TetherError(
                503,
                "server_shutting_down",
                "the server is shutting down; retry on another instance or in a moment",
                headers={"Retry-After": "5"},
            )
        if self.upstream is None:
            raise TetherError(
                503,
                "upstream_not_configured",
                "no upstream model server is configured: set TETHER_UPSTREAM_BASE_URL "
                "(and TETHER_UPSTREAM_API_KEY, TETHER_DEFAULT_MODEL) and restart",
            )
        if not (req.model or self.settings.default_model):
            raise TetherError(
                400,
                "model_required",
                "no model in the request and no TETHER_DEFAULT_MODEL set",
                param="model",
            )
        await self.catalog.require(req.model or self.settings.default_model or "")
        default_max = self.settings.default_max_tokens
        if default_max and not {"max_tokens", "max_completion_tokens"} & req.params.keys():
            req = replace(req, params={**req.params, "max_tokens": default_max})
        running = RunningTurn(req.stream, req.tenant_id, mint_turn_id())
        task = asyncio.create_task(self._run(req, running))
        running.task = task
        self.running[running.turn_id] = running
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        info = await asyncio.shield(running.ready)
        return running, info

    def find(self, tenant_id: str, conversation_id: str, turn_id: str) -> RunningTurn | None:
        """A turn running here, or a recent stream still buffered, if this tenant's
        conversation (named by its id as the client knows it) owns it."""
        running = self.running.get(turn_id) or self.recent.get(turn_id)
        if running is None or running.tenant_id != tenant_id:
            return None
        known = self.canonical.get((tenant_id, conversation_id)) or conversation_id
        return running if running.conversation_id in (conversation_id, known) else None

    def cancel(self, running: RunningTurn, reason: str = "cancelled") -> bool:
        """Stop a turn that has not started committing. Once its commit began, it completes;
        a finished turn stays as it ended. Returns whether the turn was stopped."""
        if running.committing or running.task is None or running.task.done():
            return False
        running.cancel_reason = reason
        running.task.cancel()
        return True

    async def drain(self, grace: float) -> None:
        """Graceful shutdown: refuse new turns, let running ones finish within `grace`
        seconds, then stop the rest (recorded incomplete; their streams get an error event)."""
        self.draining = True
        if self._tasks:
            log.info("shutdown.draining", turns=len(self._tasks), grace_s=grace)
            await asyncio.wait(list(self._tasks), timeout=grace)
        left = [r for r in self.running.values() if self.cancel(r, "shutdown")]
        if left:
            log.warning("shutdown.turns_stopped", turns=len(left))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    async def _lock_id(self, req: TurnRequest, probe: HistoryProbe | None) -> str | None:
        """The conversation the turn runs on (None: a new one). `probe`: a full-history
        request's history, matched against transcripts (engine/matching.py)."""
        cid = req.conversation_id
        matching = probe is not None and req.match != "off"
        if cid is None:
            if probe is None or not matching:
                return None
            found = await continued(self.store, req.tenant_id, probe)
            return found.id if found else None
        known = self.canonical.get((req.tenant_id, cid))
        if known is not None and not matching:  # ids never change, so this cannot go stale
            return known
        lookup = known or cid
        cached = self.views.get((req.tenant_id, lookup))
        conv: Conversation | None = cached.conv if cached is not None else None
        if conv is None and matching:
            # read the view now, not just the row (the turn reads it next anyway, and it stays
            # cached): compared with it, the request needs no transcript hash (~170 µs at 200
            # messages). Read without the conversation's lock, it is kept only if no turn wrote
            # the entry meanwhile (else it may be older than that turn's commit)
            stamp = self.views.stamp((req.tenant_id, lookup))
            loaded = await self.store.load_conversation(req.tenant_id, lookup, False)
            conv = loaded.conversation
            if conv is not None:
                cached = cached_view(conv, loaded.checkpoint, loaded.messages or [])
                if conv.id == lookup:  # (an alias's view is filed under the conversation's id)
                    self.views.put_if((req.tenant_id, lookup), cached, stamp)
        elif conv is None:
            conv = await self.store.resolve(req.tenant_id, lookup)
        if conv is not None:
            self.canonical.put((req.tenant_id, cid), conv.id)
        if conv is None and is_server_minted(cid):
            raise TetherError(
                404,
                "conversation_not_found",
                f"conversation {cid!r} does not exist (ids starting with 'conv_' are minted by "
                "the server; omit the id to start a new conversation)",
            )
        if conv is None:
            return cid
        if probe is not None and matching and not probe.extends(conv, cached):
            fork = await continued(self.store, req.tenant_id, probe, within=conv)
            if fork is not None:
                log.info("turn.fork_continued", conversation=conv.id, fork=fork.id)
                return fork.id
        return conv.id

    async def _run(self, req: TurnRequest, running: RunningTurn) -> None:
        model = req.model or self.settings.default_model or ""
        turn = TurnRecord(running.turn_id, "running", model, req.stream, started_at=time.time())
        target: Target | None = None
        try:
            full = mode_of(req.messages, req.history) == "replay"
            probe = HistoryProbe(req.messages) if full else None
            lock_id = await self._lock_id(req, probe)
            reject = req.concurrency == "reject"
            async with self.locks.hold(req.tenant_id, lock_id or turn.id, reject=reject):
                target = await load_target(
                    self.store,
                    req,
                    lock_id,
                    model,
                    self.views,
                    probe,
                    self.settings.dangling_tool_calls == "close",
                )
                added = len(target.plan.new)
                if added > self.settings.max_messages:
                    raise TetherError(
                        413,
                        "too_many_messages",
                        f"the request adds {added} messages; the limit is "
                        f"{self.settings.max_messages} (TETHER_MAX_MESSAGES)",
                        param="messages",
                    )
                if target.plan.closed:
                    closed = list(target.plan.closed)
                    turn.notes = {**(turn.notes or {}), "dangling_tool_calls": closed}
                    log.info("turn.dangling_closed", turn_id=turn.id, calls=closed)
                running.conversation_id = target.conversation_id
                current = target.conv.last_seq if target.conv is not None else 0
                if req.if_match is not None and not matches(req.if_match, current):
                    raise TetherError(
                        412,
                        "precondition_failed",
                        f"the conversation is at version {etag(current)}, not {req.if_match}; "
                        "reload it and retry",
                        headers={"ETag": etag(current)},
                    )
                budget = budget_for(self.settings, model, req.params, self.windows.get(model))
                outcome = Outcome()
                await self._preflight(req, target, budget, turn, outcome)
                if not req.stream:  # a stream is ready at its first token (see _stream)
                    running.ready.set_result(_info(target, turn, outcome))
                if outcome.compacted and req.stream:
                    running.publish(_compaction_comment(target, outcome))
                for attempt in range(OVERFLOW_RETRIES + 1):
                    try:
                        await self._call(req, running, target, turn, outcome)
                        return
                    except TetherError as exc:
                        retry = (
                            exc.code == "context_length_exceeded"
                            and attempt < OVERFLOW_RETRIES
                            and turn.first_token_at is None
                            and req.compaction != "off"
                            and target.can_compact
                        )
                        if retry:
                            budget = self._learn_window(model, exc.message, target, req.params)
                        if not retry or not await self._compact(
                            target, budget, turn, outcome, True
                        ):
                            raise _overflow(exc, target) from None
                        log.info("turn.overflow_compacted", turn_id=turn.id, attempt=attempt + 1)
        except asyncio.CancelledError:
            if running.cancel_reason == "shutdown":
                error = TetherError(
                    503,
                    "server_shutting_down",
                    f"turn {turn.id} was stopped: the server shut down before it finished",
                    headers={"Retry-After": "5"},
                )
            else:
                error = TetherError(409, "turn_cancelled", f"turn {turn.id} was cancelled")
            await self._fail(running, turn, target, error, req.idempotency)
        except TetherError as exc:
            await self._fail(running, turn, target, exc, req.idempotency)
        except Exception:
            log.exception("turn.crashed", turn_id=turn.id)
            error = TetherError(500, "internal_error", f"turn {turn.id} failed unexpectedly")
            await self._fail(running, turn, target, error, req.idempotency)
        finally:
            running.status = turn.status
            running.close()
            self.running.pop(running.turn_id, None)
            running.task = None  # what resuming needs is the log; let the task go
            if running.stream and running.log:
                self.recent.put(running.turn_id, running)

    # -- compaction ----------------------------------------------------------------------
    def _learn_window(
        self, model: str, message: str, target: Target, params: dict[str, Any]
    ) -> Budget:
        """The upstream said the prompt is too long: believe it. Its stated window (or, if it
        names none, 80% of what was just sent) is used for this model from now on."""
        match = _WINDOW_IN_MESSAGE.search(message)
        if match:
            window = int(match.group(1))
        else:
            system, messages = target.view_messages()
            current = budget_for(self.settings, model, params, self.windows.get(model))
            window = int(0.8 * estimate(system, messages)) + current.reserved
        self.windows[model] = window
        log.warning("upstream.window_learned", model=model, window=window)
        return budget_for(self.settings, model, params, window)

    async def _preflight(
        self, req: TurnRequest, target: Target, budget: Budget, turn: TurnRecord, outcome: Outcome
    ) -> None:
        if not target.can_compact or req.compaction == "off":
            return
        tokens = target.prompt_tokens()
        if not should_compact(tokens, budget, req.compaction):
            return
        if req.compaction == "auto" and target.conv is not None and tokens <= budget.usable:
            recent = await self.store.list_checkpoints(target.conv.pk)
            if thrashing([float(c.stats.get("saved", 1.0)) for c in recent[-2:]]):
                turn.notes = {
                    **(turn.notes or {}),
                    "compaction": "paused: the last two compactions each saved under 10%; it "
                    "resumes when the view no longer fits the model, or with "
                    "'X-Tether-Compaction: now'",
                }
                log.warning("compaction.paused", conversation=target.conversation_id)
                return
        await self._compact(target, budget, turn, outcome, req.compaction == "now")

    async def _compact(
        self, target: Target, budget: Budget, turn: TurnRecord, outcome: Outcome, force: bool
    ) -> bool:
        assert self.upstream is not None and target.conv is not None
        try:
            result = await compact(
                self.store,
                self.upstream,
                target.conv,
                target.checkpoint,
                target.plan.history,
                [m for m in target.plan.new if m.role != "system"],
                budget,
                self.settings.compaction_model or target.model,
                self.settings.compaction_min_tail_messages,
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
            return False
        if result is None:
            return False
        target.conv, target.checkpoint = result.conversation, result.checkpoint
        turn.compacted = outcome.compacted = True
        if outcome.tokens_before is None:
            outcome.tokens_before = result.checkpoint.tokens_before
        outcome.tokens_after = result.checkpoint.tokens_after
        return True

    # -- the upstream call ---------------------------------------------------------------
    @asynccontextmanager
    async def _deadline(self, turn: TurnRecord) -> AsyncIterator[None]:
        """One total deadline per turn (TETHER_MAX_TURN_SECONDS from its start) for the model's
        answer; the commit after it is never cut short."""
        limit = self.settings.max_turn_seconds
        remaining = turn.started_at + limit - time.time()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                yield
        except TimeoutError:
            raise TetherError(
                504,
                "turn_deadline_exceeded",
                f"the turn took longer than {limit:g} s (TETHER_MAX_TURN_SECONDS); nothing "
                "was stored",
            ) from None

    async def _call(
        self,
        req: TurnRequest,
        running: RunningTurn,
        target: Target,
        turn: TurnRecord,
        outcome: Outcome,
    ) -> None:
        sent = self._prepared(target)
        if sent is None:
            view = target.view()
            # the stored part was checked when it was committed: check what is new against it
            fresh = sum(1 for m in target.plan.new if m.role not in INSTRUCTION_ROLES)
            pending = validate_sequence(
                view[len(view) - fresh :], pending_after(view[: len(view) - fresh])
            )
            inline = self.settings.upstream_system_role == "inline"
            messages: Any = inline_system(view) if inline else view
        else:
            messages, pending = sent
        body = {**req.params, "model": turn.model, "messages": messages}
        if req.stream:
            await self._stream(req, running, target, turn, outcome, body, pending)
        else:
            await self._complete(req, running, target, turn, outcome, body, pending)

    def _prepared(self, target: Target) -> tuple[orjson.Fragment, frozenset[str]] | None:
        """The view as JSON, the stored part as the cache keeps it ready (no per-message work),
        and the tool calls left pending; None where that part does not apply (a new or forked
        conversation, compacted during this turn, or the system text inlined)."""
        stored = target.stored
        if (
            stored is None
            or target.new is not None
            or stored.checkpoint is not target.checkpoint
            or self.settings.upstream_system_role == "inline"
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

    async def _complete(
        self,
        req: TurnRequest,
        running: RunningTurn,
        target: Target,
        turn: TurnRecord,
        outcome: Outcome,
        body: dict[str, Any],
        pending: frozenset[str],
    ) -> None:
        assert self.upstream is not None
        async with self._deadline(turn):
            response = await self.upstream.complete(body)
        turn.first_token_at = time.time()
        fill_required(response)
        choices = response.get("choices") or [{}]
        usage = response.get("usage")
        reply = assistant_message(
            choices[0].get("message") or {}, (usage or {}).get("completion_tokens")
        )
        turn.usage = usage
        info = _info(target, turn, outcome)
        response["tether"] = info.tether()
        stored = None
        if req.idempotency is not None:
            stored = StoredResponse(req.idempotency, False, orjson.dumps(response), info.headers())
        await self._commit(turn, target, reply, pending, stored, running)
        running.final_headers = info.headers()
        running.result.set_result(response)

    async def _stream(
        self,
        req: TurnRequest,
        running: RunningTurn,
        target: Target,
        turn: TurnRecord,
        outcome: Outcome,
        body: dict[str, Any],
        pending: frozenset[str],
    ) -> None:
        assert self.upstream is not None
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        acc = Assembled()
        held: list[dict[str, Any]] = []  # the finish chunk and the usage chunk wait for commit
        async with self._deadline(turn):
            async for chunk in self.upstream.stream(body):
                if turn.first_token_at is None:
                    # headers go out now: an upstream failure before this is a plain HTTP error
                    turn.first_token_at = time.time()
                    if target.can_compact and target.conv is not None:
                        # the client learns the turn's id now, so it is a record from now on:
                        # a crash leaves it running, marked incomplete at start-up. (A JSON
                        # turn's id is only known with its result, so it is recorded then.)
                        await self.store.record_turn(target.conv.pk, turn)
                    running.ready.set_result(_info(target, turn, outcome))
                acc.add(chunk.data)
                choices = chunk.data.get("choices")
                if held or not choices or any(c.get("finish_reason") for c in choices):
                    held.append(chunk.data)
                else:
                    running.publish(chunk.raw)
        usage = acc.usage
        reply = assistant_message(acc.message(), (usage or {}).get("completion_tokens"))
        if usage is None:
            # asked for (stream_options.include_usage) but not sent: llama.cpp's Python server
            # ignores it. The turn's record gets Tether's own counts, marked as estimates.
            usage = estimated_usage(target.prompt_tokens(), reply.tokens)
            if req.include_usage:
                held.append({**chunk_meta(acc, turn), "choices": [], "usage": usage})
        turn.usage = usage
        info = _info(target, turn, outcome)
        finish = next((c for c in held if c.get("choices")), None)
        if finish is None:
            finish = {
                **chunk_meta(acc, turn),
                "choices": [
                    {"index": 0, "delta": {}, "finish_reason": acc.finish_reason or "stop"}
                ],
            }
            held.insert(0, finish)
        tail = []
        for data in held:
            if data is finish:
                data = {**data, "tether": info.tether()}
            elif not data.get("choices") and not req.include_usage:
                continue
            tail.append(orjson.dumps(data))
        tail.append(DONE)
        stored = None
        if req.idempotency is not None:
            replay = orjson.dumps([p.decode() for p in [*running.log, *tail]])
            stored = StoredResponse(req.idempotency, True, replay, info.headers())
        await self._commit(turn, target, reply, pending, stored, running)
        if not running.ready.done():  # an upstream that streamed no chunk at all
            running.ready.set_result(info)
        for payload in tail:
            running.publish(payload)

    # -- commit and failure --------------------------------------------------------------
    async def _commit(
        self,
        turn: TurnRecord,
        target: Target,
        reply: Message,
        pending: frozenset[str],
        stored: StoredResponse | None,
        running: RunningTurn,
    ) -> None:
        validate_sequence([chat_message(reply)], pending)  # the view was checked before the call
        turn.status = "completed"
        turn.finished_at = time.time()
        conv = target.conv
        running.committing = True  # from here on the turn completes: a cancel is too late
        try:
            commit = self.store.commit_turn(
                TurnCommit(
                    tenant_id=target.tenant_id,
                    turn=turn,
                    messages=[*target.plan.new, reply],
                    conversation_pk=None if target.new or conv is None else conv.pk,
                    new_conversation=target.new,
                    expected_last_seq=conv.last_seq if conv and not target.new else 0,
                    system_prompt=target.plan.system_prompt,
                    system_changed=target.plan.system_changed,
                    view_epoch=target.epoch,
                    inherit_checkpoint=target.checkpoint if target.forked_from else None,
                    response=stored,
                    **history_after(target, reply),
                )
            )
            updated = await asyncio.shield(commit)
        except ConflictError as exc:
            running.committing = False
            self.views.drop((target.tenant_id, target.conversation_id))
            raise TetherError(
                409,
                "conversation_busy",
                f"the conversation changed during the turn: {exc}",
                headers={"Retry-After": "1"},
            ) from exc
        self._remember(target, updated, turn.id, reply)
        log.info(
            "turn.committed",
            conversation=target.conversation_id,
            turn_id=turn.id,
            messages=len(target.plan.new) + 1,
            compacted=turn.compacted,
            ms=round((turn.finished_at - turn.started_at) * 1000, 1),
        )

    def _remember(
        self, target: Target, updated: Conversation, turn_id: str, reply: Message
    ) -> None:
        """Keep the conversation's view in memory with the turn's messages appended."""
        key = (target.tenant_id, updated.id)
        cached = self.views.get(key)
        conv = target.conv
        if (
            target.new
            or conv is None
            or cached is None
            or cached.state != (conv.last_seq, conv.epoch)
            or updated.epoch != conv.epoch
        ):
            # new, forked or compacted meanwhile: the next turn reads it
            self.views.drop(key)
            return
        added = [
            replace(m, seq=conv.last_seq + 1 + i, turn_id=turn_id)
            for i, m in enumerate([*target.plan.new, reply])
        ]
        self.views.put(key, extended(cached, updated, added))

    async def _fail(
        self,
        running: RunningTurn,
        turn: TurnRecord,
        target: Target | None,
        error: TetherError,
        idempotency: IdempotencyKey | None = None,
    ) -> None:
        if running.cancel_reason == "cancelled":
            turn.status = "cancelled"
        elif running.stream and turn.first_token_at is not None:
            turn.status = "incomplete"  # the client saw part of an answer that was not stored
        else:
            turn.status = "failed"
        turn.finished_at = time.time()
        turn.error = error.body()["error"]
        log.warning(
            "turn.ended", turn_id=turn.id, status=turn.status, code=error.code, http=error.status
        )
        if idempotency is not None:
            try:
                await self.store.release_idempotency(idempotency)
            except Exception:
                log.exception("turn.release_key_failed", turn_id=turn.id)
        if target is not None and target.can_compact and target.conv is not None:
            try:
                await self.store.record_turn(target.conv.pk, turn)
            except Exception:
                log.exception("turn.record_failed", turn_id=turn.id)
        if running.stream:  # ends the stream (resumers read it too)
            running.publish(orjson.dumps(error.body()))
        if not running.ready.done():
            running.ready.set_exception(error)
        elif not running.stream:
            running.result.set_exception(error)


def _log_size(running: RunningTurn) -> int:
    """Memory a finished stream holds: its payloads, ~90 bytes per bytes object and list slot,
    ~2 KB for the turn's own objects."""
    return running.size + 90 * len(running.log) + 2048


def _info(target: Target, turn: TurnRecord, outcome: Outcome) -> TurnInfo:
    if target.new is not None:
        base = target.plan.fork_seq or 0
    else:
        base = target.conv.last_seq if target.conv is not None else 0
    return TurnInfo(
        target.conversation_id,
        turn.id,
        target.epoch,
        target.forked_from,
        outcome.compacted,
        outcome.tokens_before,
        outcome.tokens_after,
        base + len(target.plan.new) + 1,
    )


def _compaction_comment(target: Target, outcome: Outcome) -> bytes:
    return (
        f": tether compacted conversation={target.conversation_id} epoch={target.epoch} "
        f"tokens_before={outcome.tokens_before} tokens_after={outcome.tokens_after}"
    ).encode()


def _overflow(exc: TetherError, target: Target) -> TetherError:
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
