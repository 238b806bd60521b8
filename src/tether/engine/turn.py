"""One turn, top to bottom: resolve → serialise → merge → view → upstream → commit → deliver.

A turn runs in its own task and owns its conversation's lock, so it completes and commits even if
the client that started it goes away. The HTTP layer waits for `ready` (where the turn runs), then
reads `events` (streaming) or `result` (JSON).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from tether.compaction.tokens import count_message
from tether.config import Settings
from tether.engine.assemble import Assembled
from tether.engine.ids import is_server_minted, mint_conversation_id, mint_turn_id
from tether.engine.locks import ConversationLocks
from tether.engine.merge import HistoryMode, MergePlan, merge, text_of
from tether.engine.validate import validate_sequence
from tether.errors import TetherError
from tether.store.base import (
    ConflictError,
    Conversation,
    Message,
    NewConversation,
    Store,
    TurnCommit,
    TurnRecord,
)
from tether.upstream.client import Upstream

log = structlog.get_logger("tether.turn")

DONE = b"[DONE]"


@dataclass(frozen=True, slots=True)
class TurnRequest:
    tenant_id: str
    conversation_id: str | None
    messages: list[Message]
    model: str | None
    stream: bool
    include_usage: bool
    params: dict[str, Any]
    history: HistoryMode = "auto"


@dataclass(frozen=True, slots=True)
class TurnInfo:
    conversation_id: str
    turn_id: str
    epoch: int
    forked_from: tuple[str, int] | None = None

    def tether(self, compacted: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
            "epoch": self.epoch,
            "compacted": compacted,
        }
        if self.forked_from:
            out["forked_from"] = {
                "conversation_id": self.forked_from[0],
                "seq": self.forked_from[1],
            }
        return out


class RunningTurn:
    def __init__(self, stream: bool) -> None:
        loop = asyncio.get_running_loop()
        self.stream = stream
        self.ready: asyncio.Future[TurnInfo] = loop.create_future()
        self.result: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.events: asyncio.Queue[bytes | None] = asyncio.Queue()


@dataclass(slots=True)
class _Target:
    """Where the turn commits: an existing conversation, or a new one (maybe a fork)."""

    tenant_id: str
    conv: Conversation | None
    new: NewConversation | None
    plan: MergePlan

    @property
    def conversation_id(self) -> str:
        if self.new is not None:
            return self.new.id
        assert self.conv is not None
        return self.conv.id


def build_view(plan: MergePlan) -> list[dict[str, Any]]:
    """What the upstream receives: system prompt, stored history, the new messages."""
    view: list[dict[str, Any]] = []
    if plan.system_prompt:
        view.append({"role": "system", "content": plan.system_prompt})
    view.extend(m.to_openai() for m in plan.history)
    view.extend(m.to_openai() for m in plan.new if m.role != "system")
    return view


def _title(messages: list[Message]) -> str | None:
    for m in messages:
        if m.role == "user":
            text = " ".join(text_of(m.content).split())
            return text[:80] or None
    return None


def _with_tokens(m: Message) -> Message:
    return Message(
        role=m.role,
        content=m.content,
        tool_calls=m.tool_calls,
        tool_call_id=m.tool_call_id,
        name=m.name,
        extra=m.extra,
        tokens=count_message(m.to_openai()),
    )


def assistant_message(openai_message: dict[str, Any], tokens: int | None) -> Message:
    known = {"role", "content", "tool_calls", "tool_call_id", "name"}
    extra = {k: v for k, v in openai_message.items() if k not in known and v is not None}
    msg = Message(
        role="assistant",
        content=openai_message.get("content"),
        tool_calls=openai_message.get("tool_calls") or None,
        name=openai_message.get("name"),
        extra=extra or None,
    )
    if tokens is None:
        return _with_tokens(msg)
    return Message(
        role=msg.role,
        content=msg.content,
        tool_calls=msg.tool_calls,
        name=msg.name,
        extra=msg.extra,
        tokens=tokens,
    )


class Engine:
    def __init__(self, store: Store, upstream: Upstream | None, settings: Settings) -> None:
        self.store = store
        self.upstream = upstream
        self.settings = settings
        self.locks = ConversationLocks(settings.queue_timeout)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, req: TurnRequest) -> tuple[RunningTurn, TurnInfo]:
        """Start a turn; return once it knows where it runs (or raise its error)."""
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
        running = RunningTurn(req.stream)
        task = asyncio.create_task(self._run(req, running))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        info = await asyncio.shield(running.ready)
        return running, info

    async def drain(self, timeout: float) -> None:
        """Wait for running turns to finish (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def _lock_id(self, req: TurnRequest) -> str | None:
        cid = req.conversation_id
        if cid is None:
            return None
        conv = await self.store.resolve(req.tenant_id, cid)
        if conv is None and is_server_minted(cid):
            raise TetherError(
                404,
                "conversation_not_found",
                f"conversation {cid!r} does not exist (ids starting with 'conv_' are minted by "
                "the server; omit the id to start a new conversation)",
            )
        return conv.id if conv else cid

    async def _target(self, req: TurnRequest, lock_id: str | None) -> _Target:
        conv = await self.store.resolve(req.tenant_id, lock_id) if lock_id else None
        stored = await self.store.load_messages(conv.pk) if conv else []
        plan = merge(stored, conv.system_prompt if conv else None, req.messages, req.history)
        plan = MergePlan(
            plan.system_prompt,
            plan.system_changed,
            plan.history,
            [_with_tokens(m) for m in plan.new],
            plan.fork_seq,
        )
        model = req.model or self.settings.default_model
        if conv is None:
            new = NewConversation(lock_id or mint_conversation_id(), _title(plan.new), model)
            return _Target(req.tenant_id, None, new, plan)
        if plan.fork_seq is not None:
            fork = NewConversation(
                mint_conversation_id(), conv.title, model, conv.pk, plan.fork_seq
            )
            return _Target(req.tenant_id, conv, fork, plan)
        return _Target(req.tenant_id, conv, None, plan)

    async def _run(self, req: TurnRequest, running: RunningTurn) -> None:
        model = req.model or self.settings.default_model
        turn = TurnRecord(mint_turn_id(), "running", model, req.stream, started_at=time.time())
        target: _Target | None = None
        try:
            lock_id = await self._lock_id(req)
            async with self.locks.hold(req.tenant_id, lock_id or turn.id):
                target = await self._target(req, lock_id)
                view = build_view(target.plan)
                validate_sequence(view)
                forked = None
                if target.new is not None and target.conv is not None:
                    forked = (target.conv.id, target.plan.fork_seq or 0)
                info = TurnInfo(target.conversation_id, turn.id, 0, forked)
                running.ready.set_result(info)
                body = {**req.params, "model": model, "messages": view}
                if req.stream:
                    await self._stream(req, running, info, turn, target, body)
                else:
                    await self._complete(running, info, turn, target, body, view)
        except Exception as exc:
            error = exc if isinstance(exc, TetherError) else None
            if error is None:
                log.exception("turn.crashed", turn_id=turn.id)
                error = TetherError(500, "internal_error", f"turn {turn.id} failed unexpectedly")
            await self._fail(running, turn, target, error)

    async def _complete(
        self,
        running: RunningTurn,
        info: TurnInfo,
        turn: TurnRecord,
        target: _Target,
        body: dict[str, Any],
        view: list[dict[str, Any]],
    ) -> None:
        assert self.upstream is not None
        response = await self.upstream.complete(body)
        turn.first_token_at = time.time()
        choices = response.get("choices") or [{}]
        message = choices[0].get("message") or {}
        usage = response.get("usage")
        reply = assistant_message(message, (usage or {}).get("completion_tokens"))
        validate_sequence([*view, reply.to_openai()])
        turn.usage = usage
        await self._commit(turn, target, reply)
        response["tether"] = info.tether()
        running.result.set_result(response)

    async def _stream(
        self,
        req: TurnRequest,
        running: RunningTurn,
        info: TurnInfo,
        turn: TurnRecord,
        target: _Target,
        body: dict[str, Any],
    ) -> None:
        assert self.upstream is not None
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        acc = Assembled()
        held: list[dict[str, Any]] = []  # the finish chunk and the usage chunk wait for commit
        async for chunk in self.upstream.stream(body):
            if turn.first_token_at is None:
                turn.first_token_at = time.time()
            acc.add(chunk.data)
            choices = chunk.data.get("choices")
            if held or not choices or any(c.get("finish_reason") for c in choices):
                held.append(chunk.data)
            else:
                running.events.put_nowait(chunk.raw)
        usage = acc.usage
        reply = assistant_message(acc.message(), (usage or {}).get("completion_tokens"))
        validate_sequence([*build_view(target.plan), reply.to_openai()])
        turn.usage = usage
        await self._commit(turn, target, reply)
        finish = next((c for c in held if c.get("choices")), None)
        if finish is None:
            finish = {
                "id": acc.chunk_id,
                "object": "chat.completion.chunk",
                "created": acc.created or int(time.time()),
                "model": acc.model or turn.model,
                "choices": [
                    {"index": 0, "delta": {}, "finish_reason": acc.finish_reason or "stop"}
                ],
            }
            held.insert(0, finish)
        for data in held:
            if data is finish:
                data = {**data, "tether": info.tether()}
            elif not data.get("choices") and not req.include_usage:
                continue
            running.events.put_nowait(orjson.dumps(data))
        running.events.put_nowait(DONE)
        running.events.put_nowait(None)

    async def _commit(self, turn: TurnRecord, target: _Target, reply: Message) -> None:
        turn.status = "completed"
        turn.finished_at = time.time()
        conv = target.conv
        try:
            await self.store.commit_turn(
                TurnCommit(
                    tenant_id=target.tenant_id,
                    turn=turn,
                    messages=[*target.plan.new, reply],
                    conversation_pk=None if target.new else (conv.pk if conv else None),
                    new_conversation=target.new,
                    expected_last_seq=conv.last_seq if conv and not target.new else 0,
                    system_prompt=target.plan.system_prompt,
                    system_changed=target.plan.system_changed,
                )
            )
        except ConflictError as exc:
            turn.status = "failed"
            raise TetherError(
                409,
                "conversation_busy",
                f"the conversation changed during the turn: {exc}",
                headers={"Retry-After": "1"},
            ) from exc
        log.info(
            "turn.committed",
            conversation=target.conversation_id,
            turn_id=turn.id,
            messages=len(target.plan.new) + 1,
            ms=round((turn.finished_at - turn.started_at) * 1000, 1),
        )

    async def _fail(
        self, running: RunningTurn, turn: TurnRecord, target: _Target | None, error: TetherError
    ) -> None:
        turn.status = "failed"
        turn.finished_at = time.time()
        turn.error = error.body()["error"]
        log.warning("turn.failed", turn_id=turn.id, code=error.code, status=error.status)
        if target is not None and target.conv is not None and target.new is None:
            try:
                await self.store.record_failed_turn(target.conv.pk, turn)
            except Exception:
                log.exception("turn.record_failed", turn_id=turn.id)
        if not running.ready.done():
            running.ready.set_exception(error)
            return
        if not running.stream:
            running.result.set_exception(error)
            return
        running.events.put_nowait(orjson.dumps(error.body()))
        running.events.put_nowait(None)
