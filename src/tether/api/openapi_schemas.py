"""The OpenAPI description's building blocks and the response bodies' schemas (the shapes
the routes return). Assembled into the document by api/openapi.py."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
SSE = "text/event-stream"
Schema = dict[str, Any]

CONVERSATION_ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"  # tether.engine.ids
ETAG_PATTERN = '^"v[0-9]+"$'


def ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: list[str], properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "required": required, "properties": properties, **extra}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}


def response_schemas() -> dict[str, Schema]:
    error_object = obj(
        ["message", "type", "param", "code"],
        {
            "message": STRING,
            "type": {
                "type": "string",
                "examples": ["invalid_request_error", "not_found_error", "api_error"],
            },
            "param": nullable(STRING),
            "code": {"type": "string", "examples": ["conversation_not_found"]},
        },
    )
    forked_from = obj(["conversation_id", "seq"], {"conversation_id": STRING, "seq": INTEGER})
    tether_info = obj(
        ["conversation_id", "turn_id", "epoch", "compacted", "tokens_before", "tokens_after"],
        {
            "conversation_id": STRING,
            "turn_id": STRING,
            "epoch": {
                "type": "integer",
                "minimum": 0,
                "description": "the checkpoint the model's view was built on (0: none yet)",
            },
            "compacted": {
                "type": "boolean",
                "description": "whether a compaction ran during this request",
            },
            "tokens_before": nullable(INTEGER),
            "tokens_after": nullable(INTEGER),
            "forked_from": forked_from,
        },
        description="Where the turn ran.",
    )
    completion = obj(
        ["choices", "tether"],
        {
            "id": STRING,
            "object": STRING,
            "created": INTEGER,
            "model": STRING,
            "choices": {
                "type": "array",
                "items": obj(
                    [],
                    {
                        "index": INTEGER,
                        "message": ANY_OBJECT,
                        "finish_reason": nullable(STRING),
                    },
                ),
            },
            "usage": nullable(ANY_OBJECT),
            "tether": ref("schemas", "TetherInfo"),
        },
        description="The upstream model's chat.completion, as it answered, plus `tether`.",
    )
    event = obj(
        ["data"],
        {
            "data": {
                "type": "string",
                "description": "A chat.completion.chunk as JSON (the one with `finish_reason` "
                "also carries `tether`), an error envelope as JSON if the turn failed after "
                "its first token, or `[DONE]` at the end.",
            },
            "event": {"const": "message"},
            "id": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "the event's place in the turn's stream, for Last-Event-ID",
            },
        },
        description="One server-sent event (SSE comments, such as the compaction notice and "
        "keep-alive pings, are not events).",
    )
    model = obj(["id"], {"id": STRING, "object": STRING, "owned_by": STRING})
    stored_message = obj(
        ["seq", "role", "content"],
        {
            "seq": {"type": "integer", "minimum": 1},
            "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {"anyOf": [STRING, {"type": "array"}, {"type": "null"}]},
            "tool_calls": {"type": "array", "items": ANY_OBJECT},
            "tool_call_id": STRING,
            "name": STRING,
        },
        additionalProperties=True,
        description="A stored message as the model sees it (extra fields the client sent are "
        "kept), with its place in the transcript.",
    )
    listed_message = {
        "allOf": [
            ref("schemas", "StoredMessage"),
            obj(["turn_id", "created_at"], {"turn_id": nullable(STRING), "created_at": NUMBER}),
        ]
    }
    checkpoint = obj(
        [
            "epoch",
            "covers_through_seq",
            "prune_through_seq",
            "tokens_before",
            "tokens_after",
            "model",
            "prompt_version",
            "ledger_entries",
            "summary_chars",
            "stats",
            "turn_id",
            "created_at",
        ],
        {
            "epoch": INTEGER,
            "covers_through_seq": INTEGER,
            "prune_through_seq": INTEGER,
            "tokens_before": INTEGER,
            "tokens_after": INTEGER,
            "model": nullable(STRING),
            "prompt_version": STRING,
            "ledger_entries": INTEGER,
            "summary_chars": INTEGER,
            "stats": ANY_OBJECT,
            "turn_id": nullable(STRING),
            "created_at": NUMBER,
        },
        description="A compaction: its summary stands in for messages up to covers_through_seq.",
    )
    return {
        "Error": obj(
            ["error"],
            {"error": error_object},
            description="Every error: the OpenAI error envelope.",
        ),
        "TetherInfo": tether_info,
        "ChatCompletion": completion,
        "ChatCompletionEvent": event,
        "Model": model,
        "ModelList": obj(
            ["data"],
            {"object": {"const": "list"}, "data": {"type": "array", "items": model}},
        ),
        "Health": obj(
            ["status", "database", "upstream"],
            {
                "status": {"enum": ["ok", "draining", "storage_unavailable"]},
                "database": {"type": "string", "examples": ["sqlite"]},
                "upstream": {"type": "boolean", "description": "whether an upstream is set"},
                "problem": {"type": "string", "description": "why storage is unavailable"},
            },
        ),
        "Conversation": obj(
            [
                "id",
                "object",
                "title",
                "model",
                "messages",
                "turns",
                "epoch",
                "forked_from",
                "created_at",
                "updated_at",
            ],
            {
                "id": STRING,
                "object": {"const": "conversation"},
                "title": nullable(STRING),
                "model": nullable(STRING),
                "messages": {"type": "integer", "minimum": 0, "description": "the last seq"},
                "turns": {"type": "integer", "minimum": 0},
                "epoch": {"type": "integer", "minimum": 0},
                "forked_from": nullable(forked_from),
                "created_at": NUMBER,
                "updated_at": NUMBER,
            },
        ),
        "StoredMessage": stored_message,
        "MessageList": obj(
            ["object", "conversation_id", "data", "has_more"],
            {
                "object": {"const": "list"},
                "conversation_id": STRING,
                "data": {"type": "array", "items": listed_message},
                "has_more": {"type": "boolean"},
            },
        ),
        "Turn": obj(
            [
                "id",
                "object",
                "conversation_id",
                "status",
                "model",
                "usage",
                "error",
                "notes",
                "started_at",
                "finished_at",
                "messages",
            ],
            {
                "id": STRING,
                "object": {"const": "conversation.turn"},
                "conversation_id": STRING,
                "status": {"enum": ["running", "completed", "failed", "incomplete", "cancelled"]},
                "model": nullable(STRING),
                "usage": nullable(ANY_OBJECT),
                "error": nullable(error_object),
                "notes": {
                    **nullable(ANY_OBJECT),
                    "description": "what Tether did besides the model call: `compaction` (paused "
                    "or failed), `dangling_tool_calls` (the unanswered tool calls it closed)",
                },
                "started_at": NUMBER,
                "finished_at": nullable(NUMBER),
                "messages": {
                    "type": "array",
                    "items": ref("schemas", "StoredMessage"),
                    "description": "the messages the turn stored, once completed",
                },
            },
        ),
        "Checkpoint": checkpoint,
        "Context": obj(
            [
                "object",
                "conversation_id",
                "model",
                "window",
                "reserved_output",
                "threshold",
                "compact_above_tokens",
                "tokens",
                "last_reported_prompt_tokens",
                "epoch",
                "covers_through_seq",
                "messages_total",
                "messages_in_view",
                "checkpoints",
            ],
            {
                "object": {"const": "conversation.context"},
                "conversation_id": STRING,
                "model": STRING,
                "window": INTEGER,
                "reserved_output": INTEGER,
                "threshold": NUMBER,
                "compact_above_tokens": INTEGER,
                "tokens": INTEGER,
                "last_reported_prompt_tokens": nullable(INTEGER),
                "epoch": INTEGER,
                "covers_through_seq": INTEGER,
                "messages_total": INTEGER,
                "messages_in_view": INTEGER,
                "checkpoints": {"type": "array", "items": ref("schemas", "Checkpoint")},
                "view": {
                    "type": "array",
                    "items": ANY_OBJECT,
                    "description": "with view=true: exactly the messages the model sees",
                },
                "summary": nullable(STRING),
                "ledger": {"type": "array", "items": STRING},
            },
        ),
        "CompactResult": obj(
            ["conversation_id", "compacted", "epoch"],
            {
                "conversation_id": STRING,
                "compacted": BOOLEAN,
                "epoch": INTEGER,
                "reason": {"type": "string", "description": "why nothing was compacted"},
            },
            description="With compacted=true, the new checkpoint's fields too.",
        ),
    }


# -- parameters and headers --------------------------------------------------------------------
