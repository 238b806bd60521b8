"""The OpenAPI operations of conversation management, search and the Hermes-compatible session
reads (api/openapi_paths.py holds the rest), and the parameters only they use."""

from __future__ import annotations

from tether.api.openapi_paths import Answer, Operation
from tether.api.openapi_schemas import Schema

_BAD_ID = "Invalid conversation id (invalid_conversation_id)."
_NOT_FOUND = "Unknown conversation, or another tenant's (conversation_not_found)."
_STORAGE = "The database is unavailable or read-only (storage_unavailable)."
_READ = {400: _BAD_ID, 404: _NOT_FOUND, 503: _STORAGE}
_WRITE = {**_READ, 507: "The disk is full (insufficient_storage); nothing was stored."}
_BODY = {
    413: "The body is too large (request_too_large).",
    415: "The body is not application/json (unsupported_media_type).",
}
_VERSIONED = ("X-Tether-Conversation", "ETag")
_FILTERS = ("ListTitle", "ListModel", "CreatedAfter", "CreatedBefore", "ForkedFrom", "Metadata")


def _query(name: str, schema: Schema, description: str, **extra: object) -> Schema:
    return {"name": name, "in": "query", "schema": schema, "description": description, **extra}


MANAGE_PARAMETERS: dict[str, Schema] = {
    "ListLimit": _query(
        "limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "Per page."
    ),
    "ListAfter": _query(
        "after",
        {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        "The last id of the previous page (keyset pagination).",
    ),
    "ListTitle": _query("q", {"type": "string"}, "A substring of the title (any case)."),
    "SearchTitle": _query("title", {"type": "string"}, "A substring of the title (any case)."),
    "ListModel": _query("model", {"type": "string"}, "Only conversations on this model."),
    "CreatedAfter": _query(
        "created_after", {"type": "number"}, "Created after this unix time (seconds)."
    ),
    "CreatedBefore": _query(
        "created_before", {"type": "number"}, "Created before this unix time (seconds)."
    ),
    "ForkedFrom": _query(
        "forked_from", {"type": "string"}, "Only forks of this conversation (its id)."
    ),
    "Metadata": _query(
        "metadata",
        {"type": "object"},  # a query string's values are all strings
        "metadata[key]=value: only conversations whose metadata holds every pair given.",
        style="deepObject",
        explode=True,
    ),
    "SearchQuery": _query(
        "q",
        {"type": "string", "minLength": 1, "maxLength": 512},
        'Words (all must occur; the exact phrase ranks first), or FTS5 syntax: "a phrase", '
        "prefix*, AND / OR / NOT, NEAR(a b).",
        required=True,
        example="compaction",
    ),
    "SearchGroup": _query(
        "group",
        {"type": "boolean", "default": True},
        "One hit per conversation (its best); false: every matching message.",
    ),
    "ExportFormat": _query(
        "format",
        {"enum": ["json", "markdown"], "default": "json"},
        "JSON (re-imports with `tether conversations import`) or Markdown.",
        example="markdown",
    ),
    "SessionId": {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        "description": "A session id: the conversation's id or any of its aliases.",
    },
    "ResponseStream": _query(
        "stream", {"type": "boolean"}, "true: answer the response's events (resume)."
    ),
    "StartingAfter": _query(
        "starting_after",
        {"type": "integer", "minimum": 0, "maximum": 999999999},
        "With stream=true: the sequence_number after which to start.",
    ),
    "ItemId": {
        "name": "item_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "maxLength": 64},
        "description": "An item's id (msg_<seq>, fc_<seq>_<n>, fco_<seq>).",
    },
    "ResponseId": {
        "name": "response_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^resp_[0-9a-f]{32}$"},
        "description": "A response's id (resp_…).",
    },
    "ItemsOrder": _query("order", {"enum": ["asc", "desc"], "default": "desc"}, "Item order."),
    "ItemsAfter": _query("after", {"type": "string"}, "The last item id of the previous page."),
    "Offset": _query("offset", {"type": "integer", "minimum": 0, "maximum": 100000}, "Skip."),
    "SessionLimit": _query(
        "limit", {"type": "integer", "minimum": 0, "maximum": 200, "default": 50}, "Per page."
    ),
}

MANAGE_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="get",
        path="/v1/conversations",
        id="listConversations",
        tag="conversations",
        summary="The tenant's conversations, newest activity first",
        parameters=("ListLimit", "ListAfter", *_FILTERS),
        answers=(Answer(description="A page of conversations.", schema="ConversationList"),),
        errors={
            400: "A bad limit, or a filter that is not a number where one is needed "
            "(invalid_request).",
            404: "`after` names no conversation of the tenant (conversation_not_found).",
            503: _STORAGE,
        },
    ),
    Operation(
        method="get",
        path="/v1/conversations/{conversation_id}",
        id="getConversation",
        tag="conversations",
        summary="A conversation: its record, metadata, checkpoints, aliases, context use",
        parameters=("ConversationId",),
        answers=(
            Answer(
                description="The conversation.", schema="ConversationDetail", headers=_VERSIONED
            ),
        ),
        errors=_READ,
    ),
    Operation(
        method="patch",
        path="/v1/conversations/{conversation_id}",
        id="updateConversation",
        tag="conversations",
        summary="Set the title and/or replace the metadata",
        parameters=("ConversationId", "IfMatch"),
        request="ConversationPatch",
        example={"title": "Trip planning", "metadata": {"team": "travel"}},
        answers=(
            Answer(
                description="The conversation.", schema="ConversationDetail", headers=_VERSIONED
            ),
        ),
        errors={
            **_WRITE,
            **_BODY,
            400: _BAD_ID[:-1] + ", or invalid fields (invalid_request, invalid_json).",
            412: "If-Match names another transcript version (precondition_failed).",
        },
    ),
    Operation(
        method="delete",
        path="/v1/conversations/{conversation_id}",
        id="deleteConversation",
        tag="conversations",
        summary="Delete a conversation and everything it owns",
        description="Messages, checkpoints, turns and their tool journal, idempotency records, "
        "aliases and search rows are removed in one transaction. Its forks stay, with their "
        "copied messages (their forked_from becomes null).",
        parameters=("ConversationId",),
        answers=(Answer(description="What was removed.", schema="ConversationDeleted"),),
        errors={**_WRITE, 409: "A turn of it is running (conversation_busy)."},
    ),
    Operation(
        method="post",
        path="/v1/conversations/{conversation_id}/fork",
        id="forkConversation",
        tag="conversations",
        summary="A new conversation holding messages 1..at_seq",
        parameters=("ConversationId",),
        request="ForkRequest",
        example={"at_seq": 1},
        answers=(
            Answer(
                status=201,
                description="The fork.",
                schema="ConversationDetail",
                headers=_VERSIONED,
                links="conversation",
            ),
        ),
        errors={
            **_WRITE,
            **_BODY,
            400: _BAD_ID[:-1] + ", or at_seq outside 1..the last seq (invalid_request).",
            409: "The id asked for exists (conversation_exists).",
        },
    ),
    Operation(
        method="post",
        path="/v1/conversations/{conversation_id}/messages",
        id="appendMessages",
        tag="conversations",
        summary="Append messages without running the model",
        description="Validated like a turn's messages (the tool-call sequence included, "
        "continuing the stored transcript), stored in one transaction. With an "
        "Idempotency-Key, a retry replays the first answer.",
        parameters=("ConversationId", "IdempotencyKey"),
        request="AppendRequest",
        example={"messages": [{"role": "user", "content": "Noted from the call: ship Friday."}]},
        answers=(
            Answer(
                description="Where they were stored.",
                schema="MessagesAppended",
                headers=("X-Tether-Conversation", "ETag", "Idempotent-Replayed"),
            ),
        ),
        errors={
            **_WRITE,
            **_BODY,
            400: _BAD_ID[:-1] + ", invalid messages or fields (invalid_request, invalid_json), "
            "or an invalid Idempotency-Key (invalid_idempotency_key).",
            409: "A request with this Idempotency-Key is still running (idempotency_key_in_use).",
            413: "Too many messages, or one too large (request_too_large, too_many_messages, "
            "content_too_large).",
            422: "The messages break the tool-call sequence rules (invalid_message_sequence), or "
            "the Idempotency-Key was used with another request (idempotency_key_reused).",
        },
    ),
    Operation(
        method="get",
        path="/v1/conversations/{conversation_id}/export",
        id="exportConversation",
        tag="conversations",
        summary="The whole transcript, checkpoints marked, as JSON or Markdown",
        parameters=("ConversationId", "ExportFormat"),
        answers=(
            Answer(
                description="The export, as a download: JSON, or text/markdown.",
                schema="ConversationExport",
                text="text/markdown",
            ),
        ),
        errors={**_READ, 400: _BAD_ID[:-1] + ", or an unknown format (invalid_request)."},
    ),
    Operation(
        method="get",
        path="/v1/search",
        id="search",
        tag="conversations",
        summary="Full-text search across the tenant's transcripts",
        description="User and assistant text, tool outputs and checkpoint summaries; ranked "
        "by their own text (the newest 1,000 matches), with snippets and the matches' offsets. "
        "CJK text is searched on a trigram index.",
        parameters=("SearchQuery", "SearchGroup", "ListLimit", "SearchTitle", *_FILTERS[1:]),
        answers=(Answer(description="The hits, best first.", schema="SearchResults"),),
        errors={
            400: "An empty or too long q, bad filters (invalid_request), or a query the index "
            "rejects, with the reason (invalid_query).",
            503: _STORAGE,
        },
    ),
    Operation(
        method="get",
        path="/api/sessions",
        id="listHermesSessions",
        tag="hermes",
        summary="Conversations as Hermes sessions (Hermes API server compatible)",
        parameters=("SessionLimit", "Offset"),
        answers=(Answer(description="A page of sessions.", schema="HermesSessionList"),),
        errors={400: "A bad limit or offset (invalid_request).", 503: _STORAGE},
    ),
    Operation(
        method="get",
        path="/api/sessions/{session_id}",
        id="getHermesSession",
        tag="hermes",
        summary="One conversation as a Hermes session",
        parameters=("SessionId",),
        answers=(Answer(description="The session.", schema="HermesSession"),),
        errors=_READ,
    ),
    Operation(
        method="get",
        path="/api/sessions/{session_id}/messages",
        id="listHermesMessages",
        tag="hermes",
        summary="A conversation's messages as Hermes message rows",
        parameters=("SessionId",),
        answers=(Answer(description="The messages, in order.", schema="HermesMessageList"),),
        errors=_READ,
    ),
)
