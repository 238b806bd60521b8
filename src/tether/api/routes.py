"""HTTP routes: chat completions, models, health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether.api.body import read_json_object
from tether.api.models import OWN_FIELDS, parse_chat_request
from tether.api.responses import json_response, where_headers
from tether.api.state import AppState
from tether.engine.ids import check_conversation_id
from tether.engine.merge import HistoryMode
from tether.engine.turn import RunningTurn, TurnRequest
from tether.errors import TetherError
from tether.store.base import Conversation, Message

_HISTORY_MODES = ("append", "replay", "auto")


def _state(request: Request) -> AppState:
    return cast(AppState, request.app.state.tether)


def _conversation_id(request: Request, body_value: str | None) -> str | None:
    for header in ("x-tether-conversation", "x-hermes-session-id"):
        value = request.headers.get(header)
        if value is not None:
            return check_conversation_id(value.strip(), header)
    if body_value is not None:
        return check_conversation_id(body_value, "conversation")
    return None


def _history_mode(request: Request) -> HistoryMode:
    value = request.headers.get("x-tether-history", "auto").strip().lower()
    if value not in _HISTORY_MODES:
        raise TetherError(
            400,
            "invalid_header",
            "X-Tether-History must be 'append' or 'replay'",
            param="x-tether-history",
        )
    return cast(HistoryMode, value)


async def chat_completions(request: Request) -> Response:
    state = _state(request)
    tenant = await state.auth.tenant(request)
    data = await read_json_object(request, state.settings.max_body_bytes)
    chat = parse_chat_request(data)
    conversation_id = _conversation_id(request, chat.conversation)
    history = _history_mode(request)
    messages = [
        Message(
            role=m.role,
            content=m.content,
            tool_calls=[c.model_dump() for c in m.tool_calls] if m.tool_calls else None,
            tool_call_id=m.tool_call_id,
            name=m.name,
            extra=m.model_extra or None,
        )
        for m in chat.messages
    ]
    params = {k: v for k, v in data.items() if k not in OWN_FIELDS}
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
    req = TurnRequest(
        tenant, conversation_id, messages, chat.model, chat.stream, include_usage, params, history
    )
    running, info = await state.engine.start(req)
    headers = where_headers(info.conversation_id, info.turn_id, info.epoch)
    if not chat.stream:
        result = await running.result
        return json_response(result, 200, headers)
    return EventSourceResponse(_sse(running), headers=headers, ping=15, sep="\n", send_timeout=60)


async def _sse(running: RunningTurn) -> AsyncIterator[bytes]:
    while True:
        payload = await running.events.get()
        if payload is None:
            return
        yield b"data: " + payload + b"\n\n"


async def _owned(request: Request) -> tuple[AppState, Conversation]:
    state = _state(request)
    tenant = await state.auth.tenant(request)
    cid = check_conversation_id(request.path_params["conversation_id"], "conversation_id")
    conv = await state.store.resolve(tenant, cid)
    if conv is None:
        raise TetherError(404, "conversation_not_found", f"conversation {cid!r} does not exist")
    return state, conv


def _conversation_json(conv: Conversation) -> dict[str, Any]:
    forked = None
    if conv.forked_from_id:
        forked = {"conversation_id": conv.forked_from_id, "seq": conv.forked_from_seq}
    return {
        "id": conv.id,
        "object": "conversation",
        "title": conv.title,
        "model": conv.model,
        "messages": conv.last_seq,
        "turns": conv.turn_count,
        "epoch": conv.epoch,
        "forked_from": forked,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
    }


async def get_conversation(request: Request) -> Response:
    _, conv = await _owned(request)
    return json_response(_conversation_json(conv), 200, {"X-Tether-Conversation": conv.id})


async def get_messages(request: Request) -> Response:
    """The full transcript, oldest first (`?after=SEQ` to page on)."""
    state, conv = await _owned(request)
    after = request.query_params.get("after", "0")
    if not after.isdigit():
        raise TetherError(400, "invalid_request", "after must be a message seq", param="after")
    messages = await state.store.load_messages(conv.pk, int(after))
    data = [
        {"seq": m.seq, **m.to_openai(), "turn_id": m.turn_id, "created_at": m.created_at}
        for m in messages
    ]
    return json_response(
        {"object": "list", "conversation_id": conv.id, "data": data},
        200,
        {"X-Tether-Conversation": conv.id},
    )


async def list_models(request: Request) -> Response:
    state = _state(request)
    await state.auth.tenant(request)
    if state.upstream is not None:
        return json_response(await state.upstream.models())
    models: list[dict[str, Any]] = []
    if state.settings.default_model:
        models.append(
            {
                "id": state.settings.default_model,
                "object": "model",
                "created": 0,
                "owned_by": "tether",
            }
        )
    return json_response({"object": "list", "data": models})


async def health(request: Request) -> Response:
    state = _state(request)
    return json_response(
        {
            "status": "ok",
            "database": state.store.url.split("://", 1)[0],
            "upstream": state.upstream is not None,
        }
    )


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}", get_conversation, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/messages", get_messages, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
]
