"""HTTP routes: chat completions, models, health."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from tether.api import (
    approvals,
    chat,
    conversation_items,
    conversations,
    operations,
    responses,
    responses_compact,
    responses_ws,
    search,
    sessions,
    turns,
)
from tether.api.access import owned, state_of
from tether.api.jsonbody import json_response
from tether.api.openapi import get_openapi
from tether.api.shapes import (
    CompactResult,
    Context,
    Health,
    MessageList,
    Model,
    ModelList,
    listed_message,
)
from tether.api.state import AppState
from tether.engine.inspect import compact_conversation, context_report
from tether.engine.request import etag
from tether.errors import TetherError
from tether.model import Conversation

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
Endpoint = Callable[[Request], Awaitable[Response]]
MESSAGES_PAGE = 1000  # messages per page of GET …/messages, by default
MESSAGES_PAGE_MAX = 10_000


def _conv_headers(conv: Conversation) -> dict[str, str]:
    return {"X-Tether-Conversation": conv.id, "ETag": etag(conv.last_seq)}


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
    body: MessageList = {
        "object": "list",
        "conversation_id": conv.id,
        "data": [listed_message(m) for m in messages],
        "has_more": conv.last_seq > through,
    }
    return json_response(body, 200, _conv_headers(conv))


async def get_context(request: Request) -> Response:
    """Window, tokens, threshold, epoch and checkpoints; `?view=true` adds what the model sees."""
    state, conv = await owned(request)
    view = request.query_params.get("view", "false").lower()
    if view not in _BOOLEANS:  # not silently false: the caller asked for something
        raise TetherError(400, "invalid_request", "view must be true or false", param="view")
    # the engine's report has the Context shape (engine/inspect.py builds it as a plain dict)
    report = cast(Context, await context_report(state.engine, conv, _BOOLEANS[view]))
    return json_response(report, 200, {"X-Tether-Conversation": conv.id})


async def post_compact(request: Request) -> Response:
    state, conv = await owned(request)
    if state.engine.draining:
        raise TetherError(
            503, "server_shutting_down", "the server is shutting down", headers={"Retry-After": "5"}
        )
    result = await compact_conversation(state.engine, conv)
    body = cast(CompactResult, {"conversation_id": conv.id, **result})  # engine/inspect.py's
    return json_response(body, 200, {"X-Tether-Conversation": conv.id})


async def _models(state: AppState) -> ModelList:
    if state.upstream is not None:  # the upstream's list, passed through as it answered
        return cast(ModelList, await state.upstream.models())
    models: list[Model] = []
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
    return json_response(await _models(state_of(request)))


async def get_model(request: Request) -> Response:
    """One model of the upstream's list (`client.models.retrieve`)."""
    model_id = request.path_params["model_id"]
    for model in (await _models(state_of(request))).get("data") or ():
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
    body: Health = {
        "status": "draining" if draining else "storage_unavailable" if problem else "ok",
        "database": state.store.url.split("://", 1)[0],
        "upstream": state.upstream is not None,
    }
    if problem:
        body["problem"] = problem
    failing = draining or problem is not None
    return json_response(body, 503 if failing else 200, {"Retry-After": "5"} if failing else None)


def by_method(path: str, **handlers: Endpoint) -> Route:
    """One route answering several methods (so a 405 lists them all in Allow)."""

    async def dispatch(request: Request) -> Response:
        return await handlers[request.method if request.method != "HEAD" else "GET"](request)

    return Route(path, dispatch, methods=list(handlers))


routes = [
    Route("/v1/chat/completions", chat.chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    by_method(
        "/v1/conversations",
        GET=conversations.list_conversations,
        POST=conversation_items.create_conversation,
    ),
    by_method(
        "/v1/conversations/{conversation_id}",
        GET=conversations.get_conversation,
        PATCH=conversations.patch_conversation,
        POST=conversations.patch_conversation,  # OpenAI's update (metadata) is a POST
        DELETE=conversations.delete_conversation,
    ),
    by_method(
        "/v1/conversations/{conversation_id}/items",
        GET=conversation_items.list_items,
        POST=conversation_items.add_items,
    ),
    by_method(
        "/v1/conversations/{conversation_id}/items/{item_id}",
        GET=conversation_items.get_item,
        DELETE=conversation_items.delete_item,
    ),
    by_method(
        "/v1/conversations/{conversation_id}/messages",
        GET=get_messages,
        POST=conversations.append_messages,
    ),
    Route(
        "/v1/conversations/{conversation_id}/fork",
        conversations.fork_conversation,
        methods=["POST"],
    ),
    Route(
        "/v1/conversations/{conversation_id}/export",
        conversations.export_conversation,
        methods=["GET"],
    ),
    Route("/v1/search", search.search, methods=["GET"]),
    Route("/v1/responses", responses.create_response, methods=["POST"]),
    WebSocketRoute("/v1/responses", responses_ws.responses_socket),
    Route("/v1/responses/compact", responses_compact.compact_response, methods=["POST"]),
    by_method(
        "/v1/responses/{response_id}",
        GET=responses.get_response,
        DELETE=responses.delete_response,
    ),
    Route("/v1/responses/{response_id}/input_items", responses.list_input_items, methods=["GET"]),
    Route("/v1/responses/{response_id}/cancel", responses.cancel_response, methods=["POST"]),
    Route("/api/sessions", sessions.list_sessions, methods=["GET"]),
    Route("/api/sessions/{session_id}", sessions.get_session, methods=["GET"]),
    Route("/api/sessions/{session_id}/messages", sessions.list_messages, methods=["GET"]),
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
    Route(
        "/v1/conversations/{conversation_id}/turns/{turn_id}/approvals/{call_id}",
        approvals.decide,
        methods=["POST"],
    ),
    Route("/v1/conversations/{conversation_id}/approvals", approvals.list_approvals),
    Route("/v1/conversations/{conversation_id}/compact", post_compact, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/ready", operations.get_ready, methods=["GET"]),
    Route("/metrics", operations.get_metrics, methods=["GET"]),
    Route("/openapi.json", get_openapi, methods=["GET"]),
]
