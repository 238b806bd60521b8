"""Turn routes: a turn's record, its events (resume by Last-Event-ID), cancelling it."""

from __future__ import annotations

import re
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from tether import model
from tether.api.access import owned, state_of, tenant_of
from tether.api.jsonbody import json_response
from tether.api.shapes import (
    ErrorObject,
    StoredMessage,
    ToolStepBody,
    Turn,
    TurnStatus,
    stored_message,
)
from tether.api.sse import turn_stream
from tether.api.state import AppState
from tether.coordination.stream import TurnStream
from tether.engine.ids import check_conversation_id
from tether.errors import TetherError
from tether.model import Conversation


async def _stored_turn(request: Request) -> model.Turn:
    state, conv = await owned(request)
    turn = await state.store.get_turn(conv.tenant_id, conv.id, request.path_params["turn_id"])
    if turn is None:
        raise TetherError(404, "turn_not_found", "no such turn in this conversation")
    return turn


async def get_turn(request: Request) -> Response:
    """A turn's record: status (running, completed, failed, incomplete or cancelled), usage,
    error, timings, and once completed the messages it stored (its result)."""
    state = state_of(request)
    tenant = tenant_of(request)
    cid = check_conversation_id(request.path_params["conversation_id"], "conversation_id")
    turn_id = request.path_params["turn_id"]
    conv = await state.store.resolve(tenant, cid)
    turn = await state.store.get_turn(tenant, cid, turn_id) if conv is not None else None
    if turn is not None:
        body = await _turn_body(state, conv, turn)
        live = state.engine.find(tenant, cid, turn_id) if turn.status == "running" else None
        if live is not None and live.status == "awaiting_approval":
            body["status"] = "awaiting_approval"
    else:
        # not recorded (yet): queued behind another turn, or the first turn of a conversation
        # that exists once it commits
        running = state.engine.find(tenant, cid, turn_id)
        if running is None and conv is None:
            raise TetherError(404, "conversation_not_found", f"conversation {cid!r} does not exist")
        if running is None:
            raise TetherError(404, "turn_not_found", "no such turn in this conversation")
        body = _running_body(turn_id, running.conversation_id or cid, running.status)
    return json_response(body, 200, {"X-Tether-Conversation": body["conversation_id"]})


async def _turn_body(state: AppState, conv: Conversation | None, turn: model.Turn) -> Turn:
    messages: list[StoredMessage] = []
    if conv is not None and turn.first_seq is not None and turn.last_seq is not None:
        stored = await state.store.load_messages(conv.pk, turn.first_seq - 1, turn.last_seq)
        messages = [stored_message(m) for m in stored]
    return {
        "id": turn.id,
        "object": "conversation.turn",
        "conversation_id": cast(str, turn.conversation_id),  # a store's get_turn sets it
        "status": cast(TurnStatus, turn.status),
        "model": turn.model,
        "usage": turn.usage,
        "error": cast(ErrorObject | None, turn.error),  # stored as TetherError.body() made it
        "notes": turn.notes,
        "started_at": turn.started_at,
        "finished_at": turn.finished_at,
        "messages": messages,
        "tool_steps": [_step(s) for s in await state.store.list_tool_steps(turn.id)],
    }


def _step(s: model.ToolStep) -> ToolStepBody:
    return {
        "call_id": s.call_id,
        "round": s.round,
        "tool": s.tool,
        "source": s.source,
        "arguments": s.arguments,
        "status": cast(Any, s.status),
        "output_chars": s.output_chars,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
    }


def _running_body(turn_id: str, conversation_id: str, status: str) -> Turn:
    """A turn running here, not recorded yet."""
    return {
        "id": turn_id,
        "object": "conversation.turn",
        "conversation_id": conversation_id,
        "status": cast(TurnStatus, status),
        "model": None,
        "usage": None,
        "error": None,
        "notes": None,
        "started_at": 0.0,
        "finished_at": None,
        "messages": [],
        "tool_steps": [],
    }


def _last_event_id(request: Request) -> int:
    """Last-Event-ID (may be empty: no event yet), else `?after=`. Each is checked when sent,
    even the one not used: a bad value is an error, not silently ignored."""
    header = request.headers.get("last-event-id")
    after = request.query_params.get("after")
    for param, value, pattern in (
        ("last-event-id", header, r"[0-9]{0,9}"),
        ("after", after, r"[0-9]{1,9}"),
    ):
        if value is not None and not re.fullmatch(pattern, value.strip()):
            raise TetherError(
                400,
                "invalid_request",
                f"{param} must be the id of an event of this turn's stream (a number)",
                param=param,
            )
    value = header if header is not None else after
    return int(value.strip() or "0") if value is not None else 0


async def _live_turn(request: Request) -> tuple[AppState, TurnStream | None]:
    """The turn named by the path if it is running here (or its stream is still buffered);
    else None after checking the conversation exists for this tenant (404 otherwise)."""
    state = state_of(request)
    tenant = tenant_of(request)
    cid = check_conversation_id(request.path_params["conversation_id"], "conversation_id")
    running = state.engine.find(tenant, cid, request.path_params["turn_id"])
    if running is None:
        await owned(request)
    return state, running


async def turn_events(request: Request) -> Response:
    """A streamed turn's events after Last-Event-ID (or `?after=`), then live ones while it
    runs. Events are kept while they fit TETHER_RESUME_BUFFER_BYTES."""
    after = _last_event_id(request)
    state, running = await _live_turn(request)
    if running is None:
        turn = await _stored_turn(request)
        raise TetherError(
            410,
            "events_expired",
            f"the events of turn {turn.id} are no longer buffered (it is {turn.status}); "
            "GET the turn for its result",
        )
    if not running.stream:
        raise TetherError(
            400, "not_streamed", "this turn was not streamed; GET the turn for its result"
        )
    headers = {"X-Tether-Turn": running.turn_id}
    if running.conversation_id:  # a turn still queued does not know it yet
        headers["X-Tether-Conversation"] = running.conversation_id
    return turn_stream(state, running, after, headers)


async def cancel_turn(request: Request) -> Response:
    """Stop a running turn (nothing of it is stored). A turn that already finished, or is
    committing, is left as it ends; either way the answer is the turn's final record."""
    _, running = await _live_turn(request)
    if running is not None:
        running.stop()
        await running.ended()
    return await get_turn(request)
