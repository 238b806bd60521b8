"""The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json` (no auth).

The paths are data (api/openapi_paths.py: `OPERATIONS`, one entry per route: summary, parameters,
the response shapes by name, the errors). The schemas are generated (api/openapi_schemas.py)
from the types that build the bodies. Built once. tests/test_openapi.py checks that every route
is described and runs schemathesis against a live server with it.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tether import __version__
from tether.api.openapi_items import ITEM_OPERATIONS
from tether.api.openapi_manage import MANAGE_OPERATIONS, MANAGE_PARAMETERS
from tether.api.openapi_paths import COMMON_ERRORS, OPERATIONS, RETRY_AFTER, Answer, Operation
from tether.api.openapi_responses import RESPONSE_OPERATIONS
from tether.api.openapi_schemas import (
    ANY_OBJECT,
    HEADER_COMPONENTS,
    HEADERS,
    JSON,
    PARAMETERS,
    SSE,
    Schema,
    ref,
    request_schemas,
    response_schemas,
)

# -- assembling the document ---------------------------------------------------------------------


def _links(kind: Literal["conversation", "turn"]) -> dict[str, Schema]:
    """Links from a response naming a conversation (and a turn) to the reads of them."""
    cid = "$response.header.X-Tether-Conversation"
    ops = [("conversation", "getConversation"), ("messages", "listMessages")]
    ops.append(("context", "getContext"))
    links = {name: {"operationId": op, "parameters": {"conversation_id": cid}} for name, op in ops}
    if kind == "turn":
        turn = {"conversation_id": cid, "turn_id": "$response.header.X-Tether-Turn"}
        for name, op in (
            ("turn", "getTurn"),
            ("events", "getTurnEvents"),
            ("cancel", "cancelTurn"),
        ):
            links[name] = {"operationId": op, "parameters": turn}
    return links


def _answer(answer: Answer) -> Schema:
    content: Schema = {}
    if answer.json:
        content[JSON] = {"schema": ref("schemas", answer.schema) if answer.schema else ANY_OBJECT}
    if answer.sse:
        content[SSE] = {"schema": ref("schemas", answer.sse_schema)}
    if answer.text:
        content[answer.text] = {"schema": {"type": "string"}}
    out: Schema = {"description": answer.description}
    if answer.headers:
        out["headers"] = {h: ref("headers", HEADER_COMPONENTS[h]) for h in answer.headers}
    out["content"] = content
    if answer.links:
        out["links"] = _links(answer.links)
    return out


def _error(status: int, description: str) -> Schema:
    out: Schema = {
        "description": description,
        "content": {JSON: {"schema": ref("schemas", "Error")}},
    }
    headers = {}
    if status in RETRY_AFTER:
        headers["Retry-After"] = ref("headers", "RetryAfter")
    if status == 412:
        headers["ETag"] = ref("headers", "ETag")
    if headers:
        out["headers"] = headers
    return out


def _operation(op: Operation) -> Schema:
    """One operation: its answers, its errors plus the common ones (auth, host, rate limit;
    only the host one for a public route)."""
    errors = (
        {**COMMON_ERRORS, **op.errors} if not op.public else {421: COMMON_ERRORS[421], **op.errors}
    )
    responses = {str(a.status): _answer(a) for a in op.answers}
    responses |= {str(s): _error(s, errors[s]) for s in sorted(errors)}
    out: Schema = {"operationId": op.id, "tags": [op.tag], "summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.public:
        out["security"] = []
    if op.parameters:
        out["parameters"] = [ref("parameters", p) for p in op.parameters]
    if op.request:
        media = {"schema": ref("schemas", op.request), "example": op.example}
        out["requestBody"] = {"required": True, "content": {JSON: media}}
    out["responses"] = responses
    return out


def _paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    for op in (*OPERATIONS, *MANAGE_OPERATIONS, *RESPONSE_OPERATIONS, *ITEM_OPERATIONS):
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return paths


_INFO = {
    "title": "Tether",
    "version": __version__,
    "summary": "An OpenAI-compatible agent server that keeps conversations on the server and "
    "never loses the thread.",
    "description": "Errors always use the OpenAI envelope "
    '`{"error": {"message", "type", "param", "code"}}`. Every route except /health and '
    "/openapi.json needs `Authorization: Bearer <key>` unless the server runs open (no keys). "
    "Each key's tenant has its own conversations: another tenant's answer 404.",
    "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
}
_TAGS = [
    {"name": "chat", "description": "OpenAI-compatible endpoints"},
    {"name": "conversations", "description": "Stored conversations"},
    {"name": "turns", "description": "One request's turn: its record, events, cancel"},
    {"name": "responses", "description": "The Responses API"},
    {"name": "hermes", "description": "Hermes API server compatible session reads"},
    {"name": "meta", "description": "Health and this document"},
]
_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "A Tether API key (`tether keys create`): tk_…",
}


@cache
def openapi_spec() -> dict[str, Any]:
    """The whole document (built once; do not modify the returned dict)."""
    return {
        "openapi": "3.1.0",
        "info": _INFO,
        "tags": _TAGS,
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": _BEARER},
            "schemas": {**request_schemas(), **response_schemas()},
            "parameters": {**PARAMETERS, **MANAGE_PARAMETERS},
            "headers": HEADERS,
        },
    }


@cache
def _spec_bytes() -> bytes:
    return orjson.dumps(openapi_spec())


async def get_openapi(request: Request) -> Response:
    return Response(_spec_bytes(), media_type=JSON)
