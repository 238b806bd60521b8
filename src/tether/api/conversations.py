"""The conversation management routes: list, read, PATCH, DELETE, fork, append without the
model, export. Thin: the engine's `conversations` and `export` modules do the work, so the
dashboard and the CLI do exactly the same."""

from __future__ import annotations

import re
from typing import cast

from starlette.requests import Request
from starlette.responses import Response

from tether.api.access import owned, state_of, tenant_of
from tether.api.body import read_json_object
from tether.api.jsonbody import json_response
from tether.api.models import parse_message
from tether.api.models_manage import AppendRequest, ConversationPatch, ForkRequest, parsed
from tether.api.shapes import conversation_body
from tether.api.shapes_manage import (
    ConversationDeleted,
    ConversationDetail,
    ConversationList,
)
from tether.engine import conversations, export
from tether.engine.idempotency import key_for
from tether.engine.request import etag
from tether.errors import TetherError
from tether.model import Conversation
from tether.store.base import ConversationFilter

LIST_LIMIT_MAX = 100
PATCH_BODY_BYTES = 64 * 1024
_METADATA = re.compile(r"metadata\[(.{1,64})\]")


def version_headers(conv: Conversation) -> dict[str, str]:
    return {"X-Tether-Conversation": conv.id, "ETag": etag(conv.last_seq)}


def _number(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise TetherError(
            400, "invalid_request", f"{name} must be a unix time in seconds", param=name
        ) from None


def filters_of(request: Request) -> ConversationFilter | None:
    """The list's (and search's) filters from the query string; None when there are none."""
    q = request.query_params
    metadata = {}
    for name, value in q.multi_items():
        if match := _METADATA.fullmatch(name):
            metadata[match.group(1)] = value
    found = ConversationFilter(
        title=q.get("q") if request.url.path.endswith("/conversations") else q.get("title"),
        model=q.get("model"),
        created_after=_number(request, "created_after"),
        created_before=_number(request, "created_before"),
        forked_from=q.get("forked_from"),
        metadata=metadata or None,
    )
    return None if found == ConversationFilter() else found


def limit_of(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit", str(default))
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= most:
        raise TetherError(
            400, "invalid_request", f"limit must be a number from 1 to {most}", param="limit"
        )
    return int(raw)


async def list_conversations(request: Request) -> Response:
    state, tenant = state_of(request), tenant_of(request)
    after = request.query_params.get("after")
    page = await conversations.list_page(
        state.engine,
        tenant,
        limit=limit_of(request, 20, LIST_LIMIT_MAX),
        after=after,
        filters=filters_of(request),
    )
    items = [conversation_body(c) for c in page.items]
    body: ConversationList = {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": page.has_more,
    }
    return json_response(body)


async def detail_body(request: Request, conv: Conversation) -> ConversationDetail:
    extra = await conversations.detail(state_of(request).engine, conv)
    return cast(ConversationDetail, {**conversation_body(conv), **extra})


async def get_conversation(request: Request) -> Response:
    _, conv = await owned(request)
    return json_response(await detail_body(request, conv), 200, version_headers(conv))


async def patch_conversation(request: Request) -> Response:
    state, conv = await owned(request)
    data = await read_json_object(request, PATCH_BODY_BYTES)
    patch = parsed(ConversationPatch, data)
    updated = await conversations.update(
        state.engine,
        conv,
        title=patch.title,
        clear_title="title" in data and patch.title is None,
        metadata=patch.metadata,
        if_match=request.headers.get("if-match"),
    )
    return json_response(await detail_body(request, updated), 200, version_headers(updated))


async def delete_conversation(request: Request) -> Response:
    state, conv = await owned(request)
    removed = await conversations.delete(state.engine, conv)
    body: ConversationDeleted = {
        "id": conv.id,
        "object": "conversation.deleted",
        "deleted": True,
        "removed": removed,
    }
    return json_response(body)


async def fork_conversation(request: Request) -> Response:
    state, conv = await owned(request)
    fork = parsed(ForkRequest, await read_json_object(request, 4096))
    made = await conversations.fork(state.engine, conv, fork.at_seq, fork.id)
    return json_response(await detail_body(request, made), 201, version_headers(made))


async def append_messages(request: Request) -> Response:
    state, conv = await owned(request)
    limit = state.settings.max_body_bytes
    data = await read_json_object(request, limit, "messages")
    if isinstance(data.get("messages"), list) and len(data["messages"]) > (
        most := state.settings.max_messages
    ):
        raise TetherError(
            413, "too_many_messages", f"at most {most} messages at once", param="messages"
        )
    req = parsed(AppendRequest, data)
    cap = state.settings.max_content_chars
    messages = [parse_message(raw, i, cap) for i, raw in enumerate(req.messages)]
    key = key_for(
        tenant_of(request),
        "append",
        request.headers.get("idempotency-key"),
        [conv.id, data],
    )
    body, headers = await conversations.append(state.engine, conv, messages, key)
    return Response(body, 200, headers, media_type="application/json")


async def export_conversation(request: Request) -> Response:
    state, conv = await owned(request)
    fmt = request.query_params.get("format", "json")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", conv.id)
    if fmt == "json":
        data = await export.export_json(state.engine, conv)
        disposition = {"Content-Disposition": f'attachment; filename="{name}.json"'}
        return Response(export.dumps(data), 200, disposition, media_type="application/json")
    if fmt == "markdown":
        text = await export.export_markdown(state.engine, conv)
        disposition = {"Content-Disposition": f'attachment; filename="{name}.md"'}
        return Response(text, 200, disposition, media_type="text/markdown; charset=utf-8")
    raise TetherError(400, "invalid_request", "format must be json or markdown", param="format")
