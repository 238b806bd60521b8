"""Hermes-compatible reads: `GET /api/sessions`, `GET /api/sessions/{id}` and
`GET /api/sessions/{id}/messages` answer the fields Hermes' API server answers, from Tether's
conversations, for tools written against it. A session id is a conversation id or any alias
(an imported Hermes chain answers to every id it had); the answer names the conversation."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from tether.api.access import state_of, tenant_of
from tether.api.jsonbody import json_response
from tether.api.shapes_manage import (
    HermesMessage,
    HermesMessageList,
    HermesSession,
    HermesSessionList,
)
from tether.engine import conversations
from tether.errors import TetherError
from tether.model import Conversation, Message
from tether.store.indexing import content_text

PAGE_MAX = 200


def _session(conv: Conversation, aliases: list[str]) -> HermesSession:
    meta = conv.metadata or {}
    return {
        "id": conv.id,
        "source": meta.get("hermes_source") or meta.get("source") or "tether",
        "user_id": meta.get("hermes_user_id") or meta.get("user_id"),
        "model": conv.model,
        "title": conv.title,
        "started_at": conv.created_at,
        "ended_at": None,
        "end_reason": meta.get("hermes_end_reason"),  # an imported session's, as Hermes had it
        "message_count": conv.last_seq,
        "parent_session_id": conv.forked_from_id,
        "last_active": conv.updated_at,
        "_lineage_root_id": conv.id,  # compaction never changes a Tether id
        "aliases": aliases,
    }


def _session_id(request: Request) -> str:
    return str(request.path_params["session_id"])


def _int(request: Request, name: str, default: int, most: int) -> int:
    raw = request.query_params.get(name, str(default))
    if not re.fullmatch(r"[0-9]{1,6}", raw) or int(raw) > most:
        raise TetherError(
            400, "invalid_request", f"{name} must be a number from 0 to {most}", param=name
        )
    return int(raw)


async def list_sessions(request: Request) -> Response:
    """Newest activity first, `limit` and `offset` as Hermes pages them."""
    state, tenant = state_of(request), tenant_of(request)
    limit = max(1, _int(request, "limit", 50, PAGE_MAX))
    offset = _int(request, "offset", 0, 100_000)
    rows = await state.store.list_conversations(tenant, offset + limit + 1)
    page = rows[offset : offset + limit]
    data = [_session(c, await state.store.list_aliases(c.pk)) for c in page]
    body: HermesSessionList = {
        "object": "list",
        "data": data,
        "limit": limit,
        "offset": offset,
        "has_more": len(rows) > offset + limit,
    }
    return json_response(body)


async def get_session(request: Request) -> Response:
    state = state_of(request)
    conv = await conversations.get(
        state.engine, tenant_of(request), request.path_params["session_id"]
    )
    messages = await state.store.load_messages(conv.pk)
    body = _session(conv, await state.store.list_aliases(conv.pk))
    body["tool_call_count"] = sum(len(m.tool_calls or ()) for m in messages)
    first_user = next((m for m in messages if m.role == "user"), None)
    body["preview"] = (content_text(first_user.content) or "")[:80] if first_user else None
    return json_response(body)


def _message(conv: Conversation, m: Message) -> HermesMessage:
    return {
        "id": m.seq,
        "session_id": conv.id,
        "role": m.role,
        "content": content_text(m.content),
        "tool_calls": m.tool_calls,
        "tool_call_id": m.tool_call_id,
        "tool_name": m.name if m.role == "tool" else None,
        "timestamp": m.created_at,
        "token_count": m.tokens or None,
        "finish_reason": ("tool_calls" if m.tool_calls else "stop")
        if m.role == "assistant"
        else None,
    }


async def list_messages(request: Request) -> Response:
    state = state_of(request)
    conv = await conversations.get(
        state.engine, tenant_of(request), request.path_params["session_id"]
    )
    messages = await state.store.load_messages(conv.pk)
    body: HermesMessageList = {
        "object": "list",
        "session_id": conv.id,
        "data": [_message(conv, m) for m in messages],
    }
    return json_response(body)
