"""HTTP routes: chat completions, models, health."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tether.api import turns
from tether.api.access import owned, state_of
from tether.api.body import check_depth, read_json_object
from tether.api.models import OWN_FIELDS, check_limits, parse_chat_request, parse_message
from tether.api.openapi import get_openapi
from tether.api.responses import json_response
from tether.api.sse import replay_stream, turn_stream
from tether.api.state import AppState
from tether.compaction.policy import CompactionMode
from tether.engine.ids import check_conversation_id
from tether.engine.incoming import Incoming
from tether.engine.inspect import compact_conversation, context_report
from tether.engine.merge import HistoryMode
from tether.engine.types import ConcurrencyMode, MatchMode, TurnRequest, etag
from tether.errors import TetherError
from tether.store.base import (
    Conversation,
    IdempotencyKey,
    IdempotencyRecord,
)

_HISTORY_MODES = ("auto", "append", "replay")
_COMPACTION_MODES = ("auto", "off", "now")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
MESSAGES_PAGE = 1000  # messages per page of GET …/messages, by default
MESSAGES_PAGE_MAX = 10_000
_MEANINGFUL_HEADERS = (
    "x-tether-conversation",
    "x-hermes-session-id",
    "x-tether-history",
    "x-tether-compaction",
    "x-tether-match",
)


def _conversation_id(request: Request, body_value: str | None) -> str | None:
    """The id named by X-Tether-Conversation, X-Hermes-Session-Id or the body's
    `conversation` (all the same meaning; naming two different ids is an error)."""
    named: dict[str, str] = {}
    for header in ("x-tether-conversation", "x-hermes-session-id"):
        values = {v.strip() for v in request.headers.getlist(header)}
        if len(values) > 1:  # the header twice, with two ids: not silently the first
            raise TetherError(
                400,
                "conflicting_conversation_ids",
                f"the request names different conversations in its {header} headers: "
                f"{sorted(v[:130] for v in values)[:4]}",
                param=header,
            )
        if values:
            named[header] = check_conversation_id(values.pop(), header)
    if body_value is not None:
        named["conversation"] = check_conversation_id(body_value.strip(), "conversation")
    if len(set(named.values())) > 1:
        raise TetherError(
            400,
            "conflicting_conversation_ids",
            f"the request names different conversations: {named}",
            param=next(iter(named)),
        )
    return next(iter(named.values()), None)


def _choice(request: Request, header: str, choices: tuple[str, ...]) -> str:
    """A header that names one of `choices` (the first is the default); 400 otherwise."""
    value = request.headers.get(header, choices[0]).strip().lower()
    if value not in choices:
        allowed = ", ".join(f"'{c}'" for c in choices)
        raise TetherError(
            400, "invalid_header", f"{header} must be one of {allowed}", param=header.lower()
        )
    return value


async def chat_completions(request: Request) -> Response:
    state = state_of(request)
    tenant = await state.auth.tenant(request)
    # each message's nesting is checked as it is parsed (parse_message)
    data = await read_json_object(request, state.settings.max_body_bytes, "messages")
    chat = parse_chat_request(data)
    conversation_id = _conversation_id(request, chat.conversation)
    history = cast(HistoryMode, _choice(request, "X-Tether-History", _HISTORY_MODES))
    limit = state.settings.max_content_chars
    messages = Incoming(chat.messages, lambda raw, i: parse_message(raw, i, limit))
    full = history == "replay" or (history == "auto" and "assistant" in messages.roles)
    check_limits(chat, state.settings.max_messages, full)
    if not full:
        list(messages)  # a bridge's messages are all new: validate them all now
    compaction = cast(CompactionMode, _choice(request, "X-Tether-Compaction", _COMPACTION_MODES))
    params = {k: v for k, v in data.items() if k not in OWN_FIELDS}
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
    req = TurnRequest(
        tenant,
        conversation_id,
        messages,
        chat.model,
        chat.stream,
        include_usage,
        params,
        history,
        compaction,
        cast(ConcurrencyMode, _choice(request, "X-Tether-Concurrency", ("enqueue", "reject"))),
        if_match=request.headers.get("if-match"),
        match=cast(MatchMode, _choice(request, "X-Tether-Match", ("auto", "off"))),
    )
    idempotency = _idempotency_key(request, tenant, data)
    if idempotency is not None:
        record = await state.store.claim_idempotency(
            idempotency, state.settings.idempotency_retention
        )
        if record is not None:
            return _replay(record, idempotency)
        req = replace(req, idempotency=idempotency)
    try:
        running, info = await state.engine.start(req)
    except TetherError:
        if idempotency is not None:
            await state.store.release_idempotency(idempotency)
        raise
    if not chat.stream:
        result = await running.result
        return json_response(result, 200, running.final_headers)
    return turn_stream(state, running, 0, info.headers())


def _idempotency_key(request: Request, tenant: str, data: dict[str, Any]) -> IdempotencyKey | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    # C0, DEL and C1 (headers are decoded as latin-1: bytes 0x80-0x9f are U+0080-U+009F)
    if not 1 <= len(key) <= 255 or any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in key):
        raise TetherError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 characters without control characters",
            param="idempotency-key",
        )
    # the request as it will be run: its body and every header that changes what it does
    meaning = [data, *(request.headers.get(h) for h in _MEANINGFUL_HEADERS)]
    try:
        serialised = orjson.dumps(meaning, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # a message too deep to write, not parsed yet: say where
        check_depth(data)
        raise
    digest = hashlib.sha256(serialised).hexdigest()
    return IdempotencyKey(tenant, request.url.path, key, digest)


def _replay(record: IdempotencyRecord, key: IdempotencyKey) -> Response:
    if record.request_hash != key.request_hash:
        raise TetherError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request",
            param="idempotency-key",
        )
    if record.status != "completed" or record.response is None:
        raise TetherError(
            409,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still running; retry shortly",
            headers={"Retry-After": "1"},
        )
    headers = {**(record.headers or {}), "Idempotent-Replayed": "true"}
    if not record.stream:
        return Response(record.response, 200, headers, media_type="application/json")
    return replay_stream([p.encode() for p in orjson.loads(record.response)], headers)


def _conv_headers(conv: Conversation) -> dict[str, str]:
    return {"X-Tether-Conversation": conv.id, "ETag": etag(conv.last_seq)}


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
    _, conv = await owned(request)
    return json_response(_conversation_json(conv), 200, _conv_headers(conv))


async def get_messages(request: Request) -> Response:
    """The transcript, oldest first, a page at a time: `?limit=N` messages (default
    MESSAGES_PAGE, at most MESSAGES_PAGE_MAX) after `?after=SEQ`; `has_more` says whether to
    ask again with `after` = the last seq received. Seqs are gapless, so a page is a range."""
    state, conv = await owned(request)
    after = request.query_params.get("after", "0")
    if not re.fullmatch(r"[0-9]{1,18}", after):
        raise TetherError(400, "invalid_request", "after must be a message seq", param="after")
    limit = request.query_params.get("limit", str(MESSAGES_PAGE))
    if not re.fullmatch(r"[0-9]{1,6}", limit) or not 1 <= int(limit) <= MESSAGES_PAGE_MAX:
        raise TetherError(
            400,
            "invalid_request",
            f"limit must be a number of messages from 1 to {MESSAGES_PAGE_MAX}",
            param="limit",
        )
    through = int(after) + int(limit)
    messages = await state.store.load_messages(conv.pk, int(after), through)
    data = [
        # the server's fields last: a client's extra message fields never override them
        {**m.to_openai(), "seq": m.seq, "turn_id": m.turn_id, "created_at": m.created_at}
        for m in messages
    ]
    return json_response(
        {
            "object": "list",
            "conversation_id": conv.id,
            "data": data,
            "has_more": conv.last_seq > through,
        },
        200,
        _conv_headers(conv),
    )


async def get_context(request: Request) -> Response:
    """Window, tokens, threshold, epoch and checkpoints; `?view=true` adds what the model sees."""
    state, conv = await owned(request)
    view = request.query_params.get("view", "false").lower()
    if view not in _BOOLEANS:  # not silently false: the caller asked for something
        raise TetherError(400, "invalid_request", "view must be true or false", param="view")
    report = await context_report(state.engine, conv, _BOOLEANS[view])
    return json_response(report, 200, {"X-Tether-Conversation": conv.id})


async def post_compact(request: Request) -> Response:
    state, conv = await owned(request)
    if state.engine.draining:
        raise TetherError(
            503, "server_shutting_down", "the server is shutting down", headers={"Retry-After": "5"}
        )
    result = await compact_conversation(state.engine, conv)
    return json_response(
        {"conversation_id": conv.id, **result}, 200, {"X-Tether-Conversation": conv.id}
    )


async def _models(state: AppState) -> dict[str, Any]:
    if state.upstream is not None:
        return await state.upstream.models()
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
    return {"object": "list", "data": models}


async def list_models(request: Request) -> Response:
    state = state_of(request)
    await state.auth.tenant(request)
    return json_response(await _models(state))


async def get_model(request: Request) -> Response:
    """One model of the upstream's list (`client.models.retrieve`)."""
    state = state_of(request)
    await state.auth.tenant(request)
    model_id = request.path_params["model_id"]
    for model in (await _models(state)).get("data") or ():
        if isinstance(model, dict) and model.get("id") == model_id:
            return json_response(model)
    raise TetherError(
        404, "model_not_found", f"the upstream does not serve model {model_id!r}", param="model"
    )


async def health(request: Request) -> Response:
    """200 while serving; 503 once shutting down, or once the database cannot take writes
    (its file deleted or replaced while serving), so load balancers stop sending turns."""
    state = state_of(request)
    draining = state.engine.draining
    problem = state.store.storage_problem()
    body: dict[str, Any] = {
        "status": "draining" if draining else "storage_unavailable" if problem else "ok",
        "database": state.store.url.split("://", 1)[0],
        "upstream": state.upstream is not None,
    }
    if problem:
        body["problem"] = problem
    failing = draining or problem is not None
    return json_response(body, 503 if failing else 200, {"Retry-After": "5"} if failing else None)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}", get_conversation, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/messages", get_messages, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/context", get_context, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/turns/{turn_id}", turns.get_turn, methods=["GET"]),
    Route(
        "/v1/conversations/{conversation_id}/turns/{turn_id}/events",
        turns.turn_events,
        methods=["GET"],
    ),
    Route(
        "/v1/conversations/{conversation_id}/turns/{turn_id}/cancel",
        turns.cancel_turn,
        methods=["POST"],
    ),
    Route("/v1/conversations/{conversation_id}/compact", post_compact, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/openapi.json", get_openapi, methods=["GET"]),
]
