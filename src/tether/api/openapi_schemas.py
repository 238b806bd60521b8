"""The OpenAPI description's components: the body schemas, generated from the types that build
the bodies (the request from api/models.py's pydantic models, every response from
api/shapes.py's TypedDicts), and the parameters and response headers, as data. Assembled into
the document by api/openapi.py."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from tether.api.models import ChatRequest
from tether.api.models_manage import REQUESTS
from tether.api.shapes import RESPONSE_SHAPES
from tether.api.shapes_manage import MANAGE_SHAPES

JSON = "application/json"
SSE = "text/event-stream"
Schema = dict[str, Any]

CONVERSATION_ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"  # tether.engine.ids
ETAG_PATTERN = '^"v[0-9]+"$'
_REFS = "#/components/schemas/{model}"

STRING: Schema = {"type": "string"}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}


def ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


# -- body schemas ------------------------------------------------------------------------------


class _Untitled(GenerateJsonSchema):
    """No `title` on every property (the component's name says what it is)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _tidy(schemas: dict[str, Schema]) -> dict[str, Schema]:
    """Component titles are their names; docstring descriptions on one line."""
    for name, schema in schemas.items():
        schema["title"] = name
        if "description" in schema:
            schema["description"] = " ".join(schema["description"].split())
    return schemas


def response_schemas() -> dict[str, Schema]:
    """Every response body's schema and the shapes they use, from api/shapes.py."""
    out: dict[str, Schema] = {}
    for name, shape in {**RESPONSE_SHAPES, **MANAGE_SHAPES}.items():
        schema = TypeAdapter(shape).json_schema(
            ref_template=_REFS, mode="serialization", schema_generator=_Untitled
        )
        out |= schema.pop("$defs", {})
        out[name] = schema
    return _tidy(out)


def request_schemas() -> dict[str, Schema]:
    """ChatCompletionRequest and the models it uses, from the pydantic models themselves."""
    schema = ChatRequest.model_json_schema(ref_template=_REFS)
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
    approval: Schema = {
        "type": "object",
        "required": ["decision"],
        "properties": {"decision": {"type": "string", "enum": ["approve", "deny"]}},
        "description": "A person's decision on a tool call waiting for approval.",
    }
    out = {"ChatCompletionRequest": schema, **defs, "ApprovalRequest": approval}
    for name, model in REQUESTS.items():
        generated = model.model_json_schema(ref_template=_REFS)
        out |= generated.pop("$defs", {})
        out[name] = generated
    return out


# -- parameters ----------------------------------------------------------------------------------


def _header(name: str, schema: Schema, description: str, **extra: Any) -> Schema:
    return {"name": name, "in": "header", "schema": schema, "description": description, **extra}


def _query(name: str, schema: Schema, description: str, **extra: Any) -> Schema:
    return {"name": name, "in": "query", "schema": schema, "description": description, **extra}


def _path(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


_CONVERSATION_ID: Schema = {"type": "string", "pattern": CONVERSATION_ID_PATTERN}

PARAMETERS: dict[str, Schema] = {
    "ConversationId": _path(
        "conversation_id", _CONVERSATION_ID, "The conversation's id, or one of its aliases."
    ),
    "TurnId": _path(
        "turn_id",
        {"type": "string", "examples": ["turn_0123456789abcdef01234567"]},
        "A turn's id (X-Tether-Turn, or `tether.turn_id`).",
    ),
    "CallId": _path("call_id", STRING, "The tool call's id (`tether.tool.call_id` in a stream)."),
    "ModelId": _path("model_id", STRING, "The model's id (may hold slashes: openai/gpt-4o)."),
    "IdempotencyKey": _header(
        "Idempotency-Key",
        {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^\\x00-\\x1f\\x7f]*$"},
        "A retry with the same key and request replays the first result "
        "(Idempotent-Replayed: true) instead of running a second turn. Scoped to the tenant.",
    ),
    "HermesSessionId": _header(
        "X-Hermes-Session-Id",
        _CONVERSATION_ID,
        "The conversation (same meaning as X-Tether-Conversation). An unknown id creates "
        "the conversation, except an unknown server-minted `conv_…` id (404).",
    ),
    "TetherConversation": _header(
        "X-Tether-Conversation",
        _CONVERSATION_ID,
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
    "After": _query(
        "after",
        {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999},
        "Only messages with a greater seq (to page on).",
        example=0,
    ),
    "Limit": _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 1000},
        "Messages per page (then `has_more` says whether more follow).",
        example=100,
    ),
    "View": _query(
        "view",
        {"type": "boolean", "default": False},
        "Also return exactly what the model sees (view, summary, ledger).",
        example=True,
    ),
    "LastEventId": _header(
        "Last-Event-ID",
        {"type": "string", "pattern": "^[0-9]{0,9}$"},
        "Resume after this event (the `id:` of the last event received).",
        example="0",
    ),
    "EventsAfter": _query(
        "after",
        {"type": "integer", "minimum": 0, "maximum": 999_999_999},
        "Same as Last-Event-ID (the header wins), for clients that cannot set headers.",
    ),
}

# -- response headers ----------------------------------------------------------------------------

HEADERS: dict[str, Schema] = {
    "XTetherConversation": {
        "required": True,
        "schema": _CONVERSATION_ID,
        "description": "The conversation the request ran on (after a fork: the fork's id).",
    },
    "XHermesSessionId": {
        "required": True,
        "schema": _CONVERSATION_ID,
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

# a response header's name → its component above
HEADER_COMPONENTS = {
    "X-Hermes-Session-Id": "XHermesSessionId",
    "X-Tether-Conversation": "XTetherConversation",
    "X-Tether-Turn": "XTetherTurn",
    "X-Tether-Epoch": "XTetherEpoch",
    "ETag": "ETag",
    "Retry-After": "RetryAfter",
    "Idempotent-Replayed": "IdempotentReplayed",
}
