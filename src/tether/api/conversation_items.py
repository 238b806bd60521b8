"""OpenAI's Conversations API on Tether's conversations: `POST /v1/conversations` (first items,
metadata), `POST /v1/conversations/{id}` (metadata), and the items routes. The objects are
Tether's conversation objects, which carry OpenAI's fields (`id`, `object: "conversation"`,
`created_at`, `metadata`), so one `GET /v1/conversations/{id}` serves both kinds of client.
Items added here are appended without running the model, like `POST …/messages`."""

from __future__ import annotations

from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tether.api.access import owned, state_of, tenant_of
from tether.api.body import read_json_object
from tether.api.conversations import detail_body, limit_of, version_headers
from tether.api.jsonbody import json_response
from tether.api.models_manage import ConversationCreate, ItemsCreate, parsed
from tether.engine import conversations, items
from tether.engine.idempotency import key_for
from tether.errors import TetherError
from tether.protocols import conversation_items as wire
from tether.protocols.responses_items import messages_from_input


def _order(request: Request) -> str:
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise TetherError(400, "invalid_request", "order must be asc or desc", param="order")
    return order


def _capped(request: Request, given: list[dict[str, Any]] | None, name: str) -> None:
    most = state_of(request).settings.max_messages
    if given is not None and len(given) > most:
        raise TetherError(413, "too_many_messages", f"at most {most} items at once", param=name)


async def create_conversation(request: Request) -> Response:
    state = state_of(request)
    data = await read_json_object(request, state.settings.max_body_bytes)
    body = parsed(ConversationCreate, data)
    _capped(request, body.items, "items")
    messages = messages_from_input(body.items, "items") if body.items else []
    made = await items.create(state.engine, tenant_of(request), messages, body.metadata or {})
    return json_response(await detail_body(request, made), 200, version_headers(made))


async def list_items(request: Request) -> Response:
    state, conv = await owned(request)
    found, more = await wire.page(
        state.engine,
        conv,
        after=request.query_params.get("after"),
        limit=limit_of(request, 20, 100),
        order=_order(request),
    )
    return json_response(_listed(found, more))


def _listed(found: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": found,
        "first_id": found[0]["id"] if found else None,
        "last_id": found[-1]["id"] if found else None,
        "has_more": more,
    }


async def add_items(request: Request) -> Response:
    """Append items (Idempotency-Key honoured); answer the items they became."""
    state, conv = await owned(request)
    data = await read_json_object(request, state.settings.max_body_bytes, "items")
    if isinstance(data.get("items"), list):
        _capped(request, data["items"], "items")
    body = parsed(ItemsCreate, data)
    messages = messages_from_input(body.items, "items")
    key = key_for(
        tenant_of(request), "items", request.headers.get("idempotency-key"), [conv.id, data]
    )
    appended, headers = await conversations.append(state.engine, conv, messages, key)
    span = cast(dict[str, Any], orjson.loads(appended))
    stored = await state.store.load_messages(conv.pk, span["first_seq"] - 1, span["last_seq"])
    return json_response(_listed(wire.conversation_items(stored), False), 200, headers)


async def get_item(request: Request) -> Response:
    state, conv = await owned(request)
    return json_response(await wire.get_item(state.engine, conv, request.path_params["item_id"]))


async def delete_item(request: Request) -> Response:
    """Take the item out of the model's view (its tool call's group with it); answer the
    conversation. The transcript keeps it, marked removed."""
    state, conv = await owned(request)
    item_id = request.path_params["item_id"]
    await wire.get_item(state.engine, conv, item_id)  # 404: unknown, or removed already
    seq = wire.seq_of(item_id)
    assert seq is not None
    updated = await items.remove(state.engine, conv, seq)
    return json_response(await detail_body(request, updated), 200, version_headers(updated))
