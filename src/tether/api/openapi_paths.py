"""The paths of the OpenAPI description, as data: `OPERATIONS`, one entry per route (summary,
parameters, the successful answers' shapes by name, the errors it answers). Assembled into the
document by api/openapi.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, kw_only=True)
class Answer:
    """A successful response: its status, the body's shape (a component of api/shapes.py; None:
    any object), its headers, whether it is JSON and/or an event stream, its links."""

    description: str
    status: int = 200
    schema: str | None = None
    headers: tuple[str, ...] = ()
    json: bool = True
    sse: bool = False
    sse_schema: str = "ChatCompletionEvent"  # one event's shape, when `sse`
    text: str | None = None  # another media type answered (a string body), e.g. text/markdown
    links: Literal["conversation", "turn"] | None = None


@dataclass(frozen=True, kw_only=True)
class Operation:
    method: Literal["get", "post", "patch", "delete"]
    path: str
    id: str
    tag: str
    summary: str
    answers: tuple[Answer, ...]
    errors: dict[int, str]
    description: str | None = None
    parameters: tuple[str, ...] = ()
    request: str | None = None  # the request body's schema
    example: dict[str, Any] | None = None  # ...and an example of it
    public: bool = False  # no auth (api/gate.py: OPEN_PATHS)


# -- the errors each operation answers ----------------------------------------------------------

COMMON_ERRORS = {
    401: "Missing or invalid API key (missing_api_key, invalid_api_key).",
    421: "The Host header names a host this server does not answer for (misdirected_request; "
    "DNS-rebinding protection).",
    429: "Over the API key's rate limit (rate_limit_exceeded; TETHER_RATE_LIMIT_RPS).",
}
RETRY_AFTER = {409, 429, 503}
_NOT_FOUND = "Unknown conversation, or another tenant's (conversation_not_found)."
_BAD_ID = "Invalid conversation id (invalid_conversation_id)."
_STORAGE = "The database is unavailable or read-only (storage_unavailable)."
_READ = {400: _BAD_ID, 404: _NOT_FOUND, 503: _STORAGE}
_TURN = {**_READ, 404: _NOT_FOUND[:-1] + "; or no such turn in it (turn_not_found)."}
_UPSTREAM = {
    502: "The upstream failed or sent no model list.",
    504: "The upstream timed out (upstream_timeout).",
}
_CHAT_ERRORS = {
    400: "Malformed JSON (invalid_json), invalid fields (invalid_request), invalid ids or "
    "headers (invalid_conversation_id, conflicting_conversation_ids, invalid_header, "
    "invalid_idempotency_key), no_new_messages, model_required, context_length_exceeded, "
    "n_not_supported (n > 1).",
    404: "An unknown server-minted conversation id, or another tenant's "
    "(conversation_not_found); a model the upstream does not serve (model_not_found).",
    409: "Another turn of the conversation is running (conversation_busy), or a request with "
    "this Idempotency-Key is (idempotency_key_in_use).",
    412: "If-Match names another transcript version (precondition_failed).",
    413: "The body, the number of messages or one message is too large (request_too_large, "
    "too_many_messages, content_too_large).",
    415: "The body is not application/json (unsupported_media_type).",
    422: "The messages break the tool-call sequence rules (invalid_message_sequence), or the "
    "Idempotency-Key was used with another request (idempotency_key_reused).",
    429: "Over the API key's rate limit (rate_limit_exceeded), or the upstream's rate limit "
    "persisted through the retries (upstream_rate_limited).",
    502: "The upstream failed (upstream_unreachable, upstream_error, upstream_bad_response, "
    "upstream_auth_failed, upstream_stream_interrupted).",
    503: "No upstream is configured (upstream_not_configured), the server is shutting down "
    "(server_shutting_down), or " + _STORAGE,
    504: "The upstream timed out (upstream_timeout) or the turn exceeded "
    "TETHER_MAX_TURN_SECONDS (turn_deadline_exceeded).",
    507: "The disk is full (insufficient_storage); nothing was stored.",
}
_CHAT_HEADERS = (
    "X-Hermes-Session-Id",
    "X-Tether-Conversation",
    "X-Tether-Turn",
    "X-Tether-Epoch",
    "ETag",
    "Idempotent-Replayed",
)
_CONV = ("X-Tether-Conversation",)
_VERSIONED = ("X-Tether-Conversation", "ETag")
_CONV_TURN = ("ConversationId", "TurnId")

# -- the operations, one per route ---------------------------------------------------------------

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="post",
        path="/v1/chat/completions",
        id="createChatCompletion",
        tag="chat",
        summary="OpenAI Chat Completions on a server-side conversation",
        description="Send the new message(s) with a conversation id; Tether loads the "
        "history, calls the upstream model, stores the turn and compacts when needed. "
        "Without an id a conversation is created (its id is in X-Tether-Conversation). "
        "With `stream: true` the answer is a server-sent event stream in the OpenAI chunk "
        "format, ending with `data: [DONE]`; a failure after the first token ends it with an "
        "error event and nothing is stored.",
        parameters=(
            "IdempotencyKey",
            "HermesSessionId",
            "TetherConversation",
            "TetherHistory",
            "TetherCompaction",
            "TetherConcurrency",
            "TetherMatch",
            "IfMatch",
        ),
        request="ChatCompletionRequest",
        example={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]},
        answers=(
            Answer(
                description="The model's answer (JSON, or an event stream with stream=true).",
                schema="ChatCompletion",
                headers=_CHAT_HEADERS,
                sse=True,
                links="turn",
            ),
        ),
        errors=_CHAT_ERRORS,
    ),
    Operation(
        method="get",
        path="/v1/models",
        id="listModels",
        tag="chat",
        summary="The upstream's models",
        answers=(Answer(description="The models.", schema="ModelList"),),
        errors=_UPSTREAM,
    ),
    Operation(
        method="get",
        path="/v1/models/{model_id}",
        id="getModel",
        tag="chat",
        summary="One of the upstream's models",
        parameters=("ModelId",),
        answers=(Answer(description="The model.", schema="Model"),),
        errors={404: "The upstream does not list this model (model_not_found).", **_UPSTREAM},
    ),
    Operation(
        method="get",
        path="/v1/conversations/{conversation_id}/messages",
        id="listMessages",
        tag="conversations",
        summary="The transcript, oldest first, a page at a time",
        parameters=("ConversationId", "After", "Limit"),
        answers=(Answer(description="The messages.", schema="MessageList", headers=_VERSIONED),),
        errors={
            **_READ,
            400: _BAD_ID[:-1] + ", or `after` is not a message seq or `limit` not from 1 to "
            "10,000 (invalid_request).",
        },
    ),
    Operation(
        method="get",
        path="/v1/conversations/{conversation_id}/context",
        id="getContext",
        tag="conversations",
        summary="Window, tokens, threshold, epoch and checkpoints",
        parameters=("ConversationId", "View"),
        answers=(Answer(description="The context report.", schema="Context", headers=_CONV),),
        errors={**_READ, 400: _BAD_ID[:-1] + ", or `view` is not a boolean (invalid_request)."},
    ),
    Operation(
        method="get",
        path="/v1/conversations/{conversation_id}/turns/{turn_id}",
        id="getTurn",
        tag="turns",
        summary="A turn's record: status, usage, error, timings, its messages",
        parameters=_CONV_TURN,
        answers=(Answer(description="The turn.", schema="Turn", headers=_CONV),),
        errors=_TURN,
    ),
    Operation(
        method="get",
        path="/v1/conversations/{conversation_id}/turns/{turn_id}/events",
        id="getTurnEvents",
        tag="turns",
        summary="Resume a streamed turn's events",
        description="The events after Last-Event-ID (or `after`), then the live ones while the "
        "turn runs; the same frames (and ids) as the original stream. Events are kept while "
        "they fit TETHER_RESUME_BUFFER_BYTES.",
        parameters=(*_CONV_TURN, "LastEventId", "EventsAfter"),
        answers=(
            Answer(
                description="The event stream.",
                headers=("X-Tether-Conversation", "X-Tether-Turn"),
                json=False,
                sse=True,
            ),
        ),
        errors={
            **_TURN,
            400: _BAD_ID[:-1] + ", an invalid Last-Event-ID or `after` (invalid_request), or "
            "the turn was not streamed (not_streamed).",
            410: "The turn's events are no longer buffered (events_expired): GET the turn for "
            "its result.",
        },
    ),
    Operation(
        method="post",
        path="/v1/conversations/{conversation_id}/turns/{turn_id}/cancel",
        id="cancelTurn",
        tag="turns",
        summary="Stop a running turn",
        description="Nothing of a cancelled turn is stored. A turn that already finished, or "
        "is committing, is left as it ends; either way the answer is the turn's final record.",
        parameters=_CONV_TURN,
        answers=(
            Answer(description="The turn's record after the cancel.", schema="Turn", headers=_CONV),
        ),
        errors=_TURN,
    ),
    Operation(
        method="get",
        path="/v1/conversations/{conversation_id}/approvals",
        id="listApprovals",
        tag="turns",
        summary="The server tool calls waiting for approval in a conversation",
        parameters=("ConversationId",),
        answers=(Answer(description="The waiting calls, oldest first.", schema="ApprovalList"),),
        errors={**_READ},
    ),
    Operation(
        method="post",
        path="/v1/conversations/{conversation_id}/turns/{turn_id}/approvals/{call_id}",
        id="decideApproval",
        tag="turns",
        summary="Approve or deny a server tool call that waits",
        description="A denied call (or one left past TETHER_APPROVAL_TIMEOUT) becomes a tool "
        "result saying so, which the model reads; an approved one runs.",
        parameters=(*_CONV_TURN, "CallId"),
        request="ApprovalRequest",
        example={"decision": "approve"},
        answers=(Answer(description="The decision taken.", schema="ApprovalDecision"),),
        errors={
            **_READ,
            400: "`decision` is not 'approve' or 'deny' (invalid_request), or the body is not "
            "a JSON object.",
            404: "An unknown or another tenant's conversation (conversation_not_found), no "
            "such turn in it (turn_not_found), or no such call waits (approval_not_found).",
            413: "The body is over 4 KiB (request_too_large).",
            415: "The body is not application/json (unsupported_media_type).",
        },
    ),
    Operation(
        method="post",
        path="/v1/conversations/{conversation_id}/compact",
        id="compactConversation",
        tag="conversations",
        summary="Compact now (turns may continue meanwhile)",
        parameters=("ConversationId",),
        answers=(
            Answer(
                description="What was compacted.",
                schema="CompactResult",
                headers=_CONV,
                links="conversation",
            ),
        ),
        errors={
            **_READ,
            502: "The summariser failed (compaction_failed); nothing changed.",
            503: "No upstream is configured (upstream_not_configured), the server is shutting "
            "down (server_shutting_down), or " + _STORAGE,
            507: "The disk is full (insufficient_storage); nothing was stored.",
        },
    ),
    Operation(
        method="get",
        path="/health",
        id="getHealth",
        tag="meta",
        summary="Liveness (no auth)",
        public=True,
        answers=(
            Answer(description="Serving.", schema="Health"),
            Answer(
                status=503,
                description="Shutting down (status: draining), or the database cannot take "
                "writes (status: storage_unavailable, with the problem).",
                schema="Health",
                headers=("Retry-After",),
            ),
        ),
        errors={},
    ),
    Operation(
        method="get",
        path="/ready",
        id="getReady",
        tag="meta",
        summary="Readiness (no auth): the database answers a read, the upstream its models",
        public=True,
        answers=(Answer(description="Ready: every check ok.", schema="Ready"),),
        errors={
            503: "Not ready (not_ready): the failing checks named in the message and in "
            "`checks`, with Retry-After."
        },
    ),
    Operation(
        method="get",
        path="/metrics",
        id="getMetrics",
        tag="meta",
        summary="Prometheus metrics (no auth): requests, turns, upstream, compaction, store",
        public=True,
        answers=(
            Answer(
                description="The Prometheus text exposition format.",
                json=False,
                text="text/plain; version=0.0.4; charset=utf-8",
            ),
        ),
        errors={},
    ),
    Operation(
        method="get",
        path="/openapi.json",
        id="getOpenAPI",
        tag="meta",
        summary="This document (no auth)",
        public=True,
        answers=(Answer(description="The OpenAPI 3.1 description of this API."),),
        errors={},
    ),
)
