"""`GET /v1/search?q=…`: full-text search across the caller's transcripts (engine/search.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tether.api.access import state_of, tenant_of
from tether.api.conversations import filters_of, limit_of
from tether.api.jsonbody import json_response
from tether.api.shapes_manage import SearchHitBody, SearchResults
from tether.engine import search as engine_search
from tether.errors import TetherError

_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


async def search(request: Request) -> Response:
    q = request.query_params.get("q")
    if q is None:
        raise TetherError(400, "invalid_request", "q: give something to search for", param="q")
    group = request.query_params.get("group", "true").lower()
    if group not in _BOOLEANS:
        raise TetherError(400, "invalid_request", "group must be true or false", param="group")
    hits = await engine_search.search(
        state_of(request).engine,
        tenant_of(request),
        q,
        group=_BOOLEANS[group],
        limit=limit_of(request, 20, 100),
        filters=filters_of(request),
    )
    data: list[SearchHitBody] = [
        {
            "conversation_id": h.conversation_id,
            "title": h.title,
            "kind": "summary" if h.kind == "summary" else "message",
            "seq": h.seq,
            "epoch": h.epoch,
            "role": h.role,
            "snippet": h.snippet,
            "highlights": h.highlights,
            "created_at": h.created_at,
        }
        for h in hits
    ]
    body: SearchResults = {"object": "list", "query": q, "data": data}
    return json_response(body)
