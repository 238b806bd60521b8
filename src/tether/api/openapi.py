"""The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json` (no auth).

Built once: the chat request body comes from the pydantic models that validate it
(api/models.py); the response bodies are the shapes the routes return. tests/test_openapi.py
checks that every route is described and runs schemathesis against a live server with it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tether import __version__
from tether.api.models import ChatRequest
from tether.api.openapi_schemas import (
    ANY_OBJECT,
    CONVERSATION_ID_PATTERN,
    ETAG_PATTERN,
    JSON,
    SSE,
    STRING,
    Schema,
    ref,
    response_schemas,
)

# -- schemas -----------------------------------------------------------------------------------


def _request_schemas() -> dict[str, Schema]:
    """ChatCompletionRequest and the models it uses, from the pydantic models themselves."""
    schema = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Schema] = schema.pop("$defs", {})
    # the route checks `conversation` like the id headers (tether.engine.ids)
    schema["properties"]["conversation"]["anyOf"][0]["pattern"] = CONVERSATION_ID_PATTERN
    schema["title"] = "ChatCompletionRequest"
    schema["description"] = (
        "An OpenAI Chat Completions request. Fields other than `messages`, `model`, `stream`, "
        "`stream_options` and `conversation` (temperature, tools, max_tokens…) are passed to the "
        "upstream model as sent. `conversation` names the conversation like the "
        "X-Tether-Conversation header (naming two different ids is a 400)."
    )
    return {"ChatCompletionRequest": schema, **defs}


def _header(name: str, schema: Schema, description: str, **extra: Any) -> Schema:
    return {"name": name, "in": "header", "schema": schema, "description": description, **extra}


def _parameters() -> dict[str, Schema]:
    conversation_id = {"type": "string", "pattern": CONVERSATION_ID_PATTERN}
    return {
        "ConversationId": {
            "name": "conversation_id",
            "in": "path",
            "required": True,
            "schema": conversation_id,
            "description": "The conversation's id, or one of its aliases.",
        },
        "TurnId": {
            "name": "turn_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "examples": ["turn_0123456789abcdef01234567"]},
            "description": "A turn's id (X-Tether-Turn, or `tether.turn_id`).",
        },
        "IdempotencyKey": _header(
            "Idempotency-Key",
            {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[^\\x00-\\x1f\\x7f]*$",
            },
            "A retry with the same key and request replays the first result "
            "(Idempotent-Replayed: true) instead of running a second turn. Scoped to the tenant.",
        ),
        "HermesSessionId": _header(
            "X-Hermes-Session-Id",
            conversation_id,
            "The conversation (same meaning as X-Tether-Conversation). An unknown id creates "
            "the conversation, except an unknown server-minted `conv_…` id (404).",
        ),
        "TetherConversation": _header(
            "X-Tether-Conversation",
            conversation_id,
            "The conversation (same meaning as X-Hermes-Session-Id).",
        ),
        "TetherHistory": _header(
            "X-Tether-History",
            {"enum": ["auto", "append", "replay"], "default": "auto"},
            "Whether the request's messages are new messages (append) or the whole history "
            "(replay); auto guesses from the presence of an assistant message.",
        ),
        "TetherCompaction": _header(
            "X-Tether-Compaction",
            {"enum": ["auto", "off", "now"], "default": "auto"},
            "Compact when needed (auto), never during this request (off), or before it (now).",
        ),
        "TetherConcurrency": _header(
            "X-Tether-Concurrency",
            {"enum": ["enqueue", "reject"], "default": "enqueue"},
            "While another turn of the conversation runs: wait in line (enqueue) or answer "
            "409 conversation_busy at once (reject).",
        ),
        "TetherMatch": _header(
            "X-Tether-Match",
            {"enum": ["auto", "off"], "default": "auto"},
            "A full-history request continues the conversation whose transcript its history "
            "extends: with no id, the tenant's; naming one it diverges from, its fork (auto); or "
            "never (off: no id makes a new conversation, a divergence a new fork).",
        ),
        "IfMatch": _header(
            "If-Match",
            STRING,
            'Run only on this transcript version (an ETag such as "v12", or *); otherwise 412.',
        ),
        "After": {
            "name": "after",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999},
            "example": 0,
            "description": "Only messages with a greater seq (to page on).",
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 1000},
            "example": 100,
            "description": "Messages per page (then `has_more` says whether more follow).",
        },
        "View": {
            "name": "view",
            "in": "query",
            "schema": {"type": "boolean", "default": False},
            "example": True,
            "description": "Also return exactly what the model sees (view, summary, ledger).",
        },
        "LastEventId": _header(
            "Last-Event-ID",
            {"type": "string", "pattern": "^[0-9]{0,9}$"},
            "Resume after this event (the `id:` of the last event received).",
            example="0",
        ),
        "EventsAfter": {
            "name": "after",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
            "description": "Same as Last-Event-ID (the header wins), for clients that cannot "
            "set headers.",
        },
    }


def _headers() -> dict[str, Schema]:
    conversation = {"type": "string", "pattern": CONVERSATION_ID_PATTERN}
    return {
        "XTetherConversation": {
            "required": True,
            "schema": conversation,
            "description": "The conversation the request ran on (after a fork: the fork's id).",
        },
        "XHermesSessionId": {
            "required": True,
            "schema": conversation,
            "description": "Same as X-Tether-Conversation.",
        },
        "XTetherTurn": {"required": True, "schema": STRING, "description": "The turn's id."},
        "XTetherEpoch": {
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
            "description": "The checkpoint the model's view was built on.",
        },
        "ETag": {
            "required": True,
            "schema": {"type": "string", "pattern": ETAG_PATTERN},
            "description": "The transcript version (its last seq), for If-Match.",
        },
        "RetryAfter": {
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
            "description": "Seconds to wait before retrying.",
        },
        "IdempotentReplayed": {
            "schema": {"const": "true"},
            "description": "Present when the response is the replay of an earlier request "
            "with the same Idempotency-Key.",
        },
    }


# -- responses ---------------------------------------------------------------------------------

_COMMON = {
    401: "Missing or invalid API key (missing_api_key, invalid_api_key).",
    421: "The Host header names a host this server does not answer for (misdirected_request; "
    "DNS-rebinding protection).",
    429: "Over the API key's rate limit (rate_limit_exceeded; TETHER_RATE_LIMIT_RPS).",
}
_RETRY_AFTER = {409, 429, 503}


def _error(status: int, description: str) -> Schema:
    out: Schema = {
        "description": description,
        "content": {JSON: {"schema": ref("schemas", "Error")}},
    }
    headers = {}
    if status in _RETRY_AFTER:
        headers["Retry-After"] = ref("headers", "RetryAfter")
    if status == 412:
        headers["ETag"] = ref("headers", "ETag")
    if headers:
        out["headers"] = headers
    return out


def _errors(*described: dict[int, str], auth: bool = True) -> dict[str, Schema]:
    """Error responses: `described` (status → description; later ones win), plus the common
    ones (auth, host, rate limit) unless described."""
    statuses: dict[int, str] = {}
    for more in described:
        statuses |= more
    if auth:
        statuses |= {s: d for s, d in _COMMON.items() if s not in statuses}
    else:
        statuses[421] = _COMMON[421]
    return {str(s): _error(s, statuses[s]) for s in sorted(statuses)}


def _json(schema: str, description: str, headers: dict[str, Schema] | None = None) -> Schema:
    out: Schema = {
        "description": description,
        "content": {JSON: {"schema": ref("schemas", schema)}},
    }
    if headers:
        out["headers"] = headers
    return out


def _conv_links(turn: str | None) -> dict[str, Schema]:
    """Links from a response naming a conversation (and a turn) to the reads of them."""
    cid = "$response.header.X-Tether-Conversation"
    links: dict[str, Schema] = {
        name: {"operationId": op, "parameters": {"conversation_id": cid}}
        for name, op in (
            ("conversation", "getConversation"),
            ("messages", "listMessages"),
            ("context", "getContext"),
        )
    }
    if turn is not None:
        for name, op in (
            ("turn", "getTurn"),
            ("events", "getTurnEvents"),
            ("cancel", "cancelTurn"),
        ):
            links[name] = {
                "operationId": op,
                "parameters": {"conversation_id": cid, "turn_id": turn},
            }
    return links


_NOT_FOUND = "Unknown conversation, or another tenant's (conversation_not_found)."
_BAD_ID = "Invalid conversation id (invalid_conversation_id)."
_STORAGE = "The database is unavailable or read-only (storage_unavailable)."


def _paths() -> dict[str, Schema]:
    p = "#/components/parameters/"
    conv_param = {"$ref": p + "ConversationId"}
    turn_param = {"$ref": p + "TurnId"}
    where = {
        name: ref("headers", component)
        for name, component in (
            ("X-Hermes-Session-Id", "XHermesSessionId"),
            ("X-Tether-Conversation", "XTetherConversation"),
            ("X-Tether-Turn", "XTetherTurn"),
            ("X-Tether-Epoch", "XTetherEpoch"),
            ("ETag", "ETag"),
            ("Idempotent-Replayed", "IdempotentReplayed"),
        )
    }
    conv_headers = {"X-Tether-Conversation": ref("headers", "XTetherConversation")}
    versioned = {**conv_headers, "ETag": ref("headers", "ETag")}
    chat_example = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}
    chat = {
        "operationId": "createChatCompletion",
        "tags": ["chat"],
        "summary": "OpenAI Chat Completions on a server-side conversation",
        "description": "Send the new message(s) with a conversation id; Tether loads the "
        "history, calls the upstream model, stores the turn and compacts when needed. "
        "Without an id a conversation is created (its id is in X-Tether-Conversation). "
        "With `stream: true` the answer is a server-sent event stream in the OpenAI chunk "
        "format, ending with `data: [DONE]`; a failure after the first token ends it with an "
        "error event and nothing is stored.",
        "parameters": [
            {"$ref": p + name}
            for name in (
                "IdempotencyKey",
                "HermesSessionId",
                "TetherConversation",
                "TetherHistory",
                "TetherCompaction",
                "TetherConcurrency",
                "TetherMatch",
                "IfMatch",
            )
        ],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": ref("schemas", "ChatCompletionRequest"), "example": chat_example}
            },
        },
        "responses": {
            "200": {
                "description": "The model's answer (JSON, or an event stream with stream=true).",
                "headers": where,
                "content": {
                    JSON: {"schema": ref("schemas", "ChatCompletion")},
                    SSE: {"schema": ref("schemas", "ChatCompletionEvent")},
                },
                "links": _conv_links("$response.header.X-Tether-Turn"),
            },
            **_errors(
                {
                    400: "Malformed JSON (invalid_json), invalid fields (invalid_request), invalid "
                    "ids or headers (invalid_conversation_id, conflicting_conversation_ids, "
                    "invalid_header, invalid_idempotency_key), no_new_messages, model_required, "
                    "context_length_exceeded, n_not_supported (n > 1).",
                    404: "An unknown server-minted conversation id, or another tenant's "
                    "(conversation_not_found); a model the upstream does not serve "
                    "(model_not_found).",
                    409: "Another turn of the conversation is running (conversation_busy), or a "
                    "request with this Idempotency-Key is (idempotency_key_in_use).",
                    412: "If-Match names another transcript version (precondition_failed).",
                    413: "The body, the number of messages or one message is too large "
                    "(request_too_large, too_many_messages, content_too_large).",
                    415: "The body is not application/json (unsupported_media_type).",
                    422: "The messages break the tool-call sequence rules "
                    "(invalid_message_sequence), or the Idempotency-Key was used with another "
                    "request (idempotency_key_reused).",
                    429: "Over the API key's rate limit (rate_limit_exceeded), or the upstream's "
                    "rate limit persisted through the retries (upstream_rate_limited).",
                    502: "The upstream failed (upstream_unreachable, upstream_error, "
                    "upstream_bad_response, upstream_auth_failed, upstream_stream_interrupted).",
                    503: "No upstream is configured (upstream_not_configured), the server is "
                    "shutting down (server_shutting_down), or " + _STORAGE,
                    504: "The upstream timed out (upstream_timeout) or the turn exceeded "
                    "TETHER_MAX_TURN_SECONDS (turn_deadline_exceeded).",
                    507: "The disk is full (insufficient_storage); nothing was stored.",
                }
            ),
        },
    }
    read_errors = {400: _BAD_ID, 404: _NOT_FOUND, 503: _STORAGE}
    turn_errors = {
        **read_errors,
        404: _NOT_FOUND[:-1] + "; or no such turn in it (turn_not_found).",
    }
    return {
        "/v1/chat/completions": {"post": chat},
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "tags": ["chat"],
                "summary": "The upstream's models",
                "responses": {
                    "200": _json("ModelList", "The models."),
                    **_errors(
                        {
                            502: "The upstream failed or sent no model list.",
                            504: "The upstream timed out (upstream_timeout).",
                        }
                    ),
                },
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "operationId": "getModel",
                "tags": ["chat"],
                "summary": "One of the upstream's models",
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": STRING,
                        "description": "The model's id (may hold slashes: openai/gpt-4o).",
                    }
                ],
                "responses": {
                    "200": _json("Model", "The model."),
                    **_errors(
                        {
                            404: "The upstream does not list this model (model_not_found).",
                            502: "The upstream failed or sent no model list.",
                            504: "The upstream timed out (upstream_timeout).",
                        }
                    ),
                },
            }
        },
        "/v1/conversations/{conversation_id}": {
            "get": {
                "operationId": "getConversation",
                "tags": ["conversations"],
                "summary": "A conversation's record",
                "parameters": [conv_param],
                "responses": {
                    "200": _json("Conversation", "The conversation.", versioned),
                    **_errors(read_errors),
                },
            }
        },
        "/v1/conversations/{conversation_id}/messages": {
            "get": {
                "operationId": "listMessages",
                "tags": ["conversations"],
                "summary": "The transcript, oldest first, a page at a time",
                "parameters": [conv_param, {"$ref": p + "After"}, {"$ref": p + "Limit"}],
                "responses": {
                    "200": _json("MessageList", "The messages.", versioned),
                    **_errors(
                        read_errors,
                        {
                            400: _BAD_ID[:-1] + ", or `after` is not a message seq or `limit` "
                            "not from 1 to 10,000 (invalid_request)."
                        },
                    ),
                },
            }
        },
        "/v1/conversations/{conversation_id}/context": {
            "get": {
                "operationId": "getContext",
                "tags": ["conversations"],
                "summary": "Window, tokens, threshold, epoch and checkpoints",
                "parameters": [conv_param, {"$ref": p + "View"}],
                "responses": {
                    "200": _json("Context", "The context report.", conv_headers),
                    **_errors(
                        read_errors,
                        {400: _BAD_ID[:-1] + ", or `view` is not a boolean (invalid_request)."},
                    ),
                },
            }
        },
        "/v1/conversations/{conversation_id}/turns/{turn_id}": {
            "get": {
                "operationId": "getTurn",
                "tags": ["turns"],
                "summary": "A turn's record: status, usage, error, timings, its messages",
                "parameters": [conv_param, turn_param],
                "responses": {
                    "200": _json("Turn", "The turn.", conv_headers),
                    **_errors(turn_errors),
                },
            }
        },
        "/v1/conversations/{conversation_id}/turns/{turn_id}/events": {
            "get": {
                "operationId": "getTurnEvents",
                "tags": ["turns"],
                "summary": "Resume a streamed turn's events",
                "description": "The events after Last-Event-ID (or `after`), then the live "
                "ones while the turn runs; the same frames (and ids) as the original stream. "
                "Events are kept while they fit TETHER_RESUME_BUFFER_BYTES.",
                "parameters": [
                    conv_param,
                    turn_param,
                    {"$ref": p + "LastEventId"},
                    {"$ref": p + "EventsAfter"},
                ],
                "responses": {
                    "200": {
                        "description": "The event stream.",
                        "headers": {
                            "X-Tether-Conversation": ref("headers", "XTetherConversation"),
                            "X-Tether-Turn": ref("headers", "XTetherTurn"),
                        },
                        "content": {SSE: {"schema": ref("schemas", "ChatCompletionEvent")}},
                    },
                    **_errors(
                        turn_errors,
                        {
                            400: _BAD_ID[:-1] + ", an invalid Last-Event-ID or `after` "
                            "(invalid_request), or the turn was not streamed (not_streamed).",
                            410: "The turn's events are no longer buffered (events_expired): "
                            "GET the turn for its result.",
                        },
                    ),
                },
            }
        },
        "/v1/conversations/{conversation_id}/turns/{turn_id}/cancel": {
            "post": {
                "operationId": "cancelTurn",
                "tags": ["turns"],
                "summary": "Stop a running turn",
                "description": "Nothing of a cancelled turn is stored. A turn that already "
                "finished, or is committing, is left as it ends; either way the answer is the "
                "turn's final record.",
                "parameters": [conv_param, turn_param],
                "responses": {
                    "200": _json("Turn", "The turn's record after the cancel.", conv_headers),
                    **_errors(turn_errors),
                },
            }
        },
        "/v1/conversations/{conversation_id}/compact": {
            "post": {
                "operationId": "compactConversation",
                "tags": ["conversations"],
                "summary": "Compact now (turns may continue meanwhile)",
                "parameters": [conv_param],
                "responses": {
                    "200": {
                        **_json("CompactResult", "What was compacted.", conv_headers),
                        "links": _conv_links(None),
                    },
                    **_errors(
                        read_errors,
                        {
                            502: "The summariser failed (compaction_failed); nothing changed.",
                            503: "No upstream is configured (upstream_not_configured), the "
                            "server is shutting down (server_shutting_down), or " + _STORAGE,
                            507: "The disk is full (insufficient_storage); nothing was stored.",
                        },
                    ),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "getHealth",
                "tags": ["meta"],
                "summary": "Liveness (no auth)",
                "security": [],
                "responses": {
                    "200": _json("Health", "Serving."),
                    "503": {
                        **_json(
                            "Health",
                            "Shutting down (status: draining), or the database cannot take "
                            "writes (status: storage_unavailable, with the problem).",
                        ),
                        "headers": {"Retry-After": ref("headers", "RetryAfter")},
                    },
                    **_errors(auth=False),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "tags": ["meta"],
                "summary": "This document (no auth)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 description of this API.",
                        "content": {JSON: {"schema": ANY_OBJECT}},
                    },
                    **_errors(auth=False),
                },
            }
        },
    }


@cache
def openapi_spec() -> dict[str, Any]:
    """The whole document (built once; do not modify the returned dict)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tether",
            "version": __version__,
            "summary": "An OpenAI-compatible agent server that keeps conversations on the "
            "server and never loses the thread.",
            "description": "Errors always use the OpenAI envelope "
            '`{"error": {"message", "type", "param", "code"}}`. Every route except /health '
            "and /openapi.json needs `Authorization: Bearer <key>` unless the server runs "
            "open (no keys). Each key's tenant has its own conversations: another tenant's "
            "answer 404.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "chat", "description": "OpenAI-compatible endpoints"},
            {"name": "conversations", "description": "Stored conversations"},
            {"name": "turns", "description": "One request's turn: its record, events, cancel"},
            {"name": "meta", "description": "Health and this document"},
        ],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Tether API key (`tether keys create`): tk_…",
                }
            },
            "schemas": {**_request_schemas(), **response_schemas()},
            "parameters": _parameters(),
            "headers": _headers(),
        },
    }


@cache
def _spec_bytes() -> bytes:
    return orjson.dumps(openapi_spec())


async def get_openapi(request: Request) -> Response:
    return Response(_spec_bytes(), media_type=JSON)
