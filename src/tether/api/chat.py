"""POST /v1/chat/completions: parse the request, claim its Idempotency-Key, run the turn, and
answer as JSON or as an SSE stream."""

from __future__ import annotations

from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tether.api.access import state_of, tenant_of
from tether.api.body import check_depth, read_json_object
from tether.api.models import OWN_FIELDS, check_limits, parse_chat_request, parse_message
from tether.api.sse import replay_stream, turn_stream
from tether.compaction.policy import CompactionMode
from tether.engine import idempotency
from tether.engine.ids import check_conversation_id
from tether.engine.incoming import Incoming
from tether.engine.merge import HistoryMode
from tether.engine.request import ConcurrencyMode, MatchMode, TurnRequest
from tether.errors import TetherError
from tether.protocols.chat_completions import ChatCompletions
from tether.store.base import IdempotencyKey, IdempotencyRecord
from tether.tools.registry import parse_selection

_HISTORY_MODES = ("auto", "append", "replay")
_COMPACTION_MODES = ("auto", "off", "now")
_MEANINGFUL_HEADERS = (
    "x-tether-conversation",
    "x-hermes-session-id",
    "x-tether-history",
    "x-tether-compaction",
    "x-tether-match",
    "x-tether-tools",
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
    tenant = tenant_of(request)
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
    concurrency = _choice(request, "X-Tether-Concurrency", ("enqueue", "reject"))
    match = _choice(request, "X-Tether-Match", ("auto", "off"))
    key = _idempotency_key(request, tenant, data)
    req = TurnRequest(
        tenant_id=tenant,
        conversation_id=conversation_id,
        messages=messages,
        model=chat.model,
        stream=chat.stream,
        params=params,
        projection=ChatCompletions(stream=chat.stream, include_usage=include_usage),
        history=history,
        compaction=compaction,
        concurrency=cast(ConcurrencyMode, concurrency),
        idempotency=key,
        if_match=request.headers.get("if-match"),
        match=cast(MatchMode, match),
        tools=parse_selection(request.headers.get("x-tether-tools")),
    )
    if key is not None:
        record = await idempotency.claim(state.store, key, state.settings.idempotency_retention)
        if record is not None:
            return _replay(record)
    try:
        run, info = await state.engine.start(req)
    except TetherError:
        await idempotency.release(state.store, key)
        raise
    if not chat.stream:
        body = await run.result
        return Response(body, 200, run.final_headers, media_type="application/json")
    return turn_stream(state, run.out, 0, req.projection.headers(info))


def _idempotency_key(request: Request, tenant: str, data: dict[str, Any]) -> IdempotencyKey | None:
    key = request.headers.get("idempotency-key")
    if key is None:  # the common case: nothing to hash
        return None
    # the request as it will be run: its body and every header that changes what it does
    meaning = [data, *(request.headers.get(h) for h in _MEANINGFUL_HEADERS)]
    try:
        return idempotency.key_for(tenant, request.url.path, key, meaning)
    except orjson.JSONEncodeError:  # a message too deep to write, not parsed yet: say where
        check_depth(data)
        raise


def _replay(record: IdempotencyRecord) -> Response:
    payloads, headers = idempotency.replayed(record)
    if not record.stream:
        return Response(payloads[0], 200, headers, media_type="application/json")
    return replay_stream(payloads, headers)
