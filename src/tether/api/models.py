"""Request models at the edge. Unknown OpenAI parameters pass through (`extra="allow"`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.config import JsonDict

from tether.api.body import MAX_DEPTH, check_depth
from tether.errors import TetherError
from tether.model import Message


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: str = "function"
    function: FunctionCall


_NOT_NULL: JsonDict = {"not": {"type": "null"}}
# `_check` below, as JSON Schema (for the OpenAPI description: api/openapi.py)
_MESSAGE_RULES: JsonDict = {
    "allOf": [
        {
            "if": {"properties": {"role": {"const": "tool"}}},
            "then": {
                "required": ["tool_call_id"],
                "properties": {"tool_call_id": {"type": "string", "minLength": 1}},
            },
        },
        {
            "if": {"properties": {"role": {"enum": ["system", "developer", "user"]}}},
            "then": {"required": ["content"], "properties": {"content": _NOT_NULL}},
        },
        {
            "if": {"properties": {"role": {"const": "assistant"}}},
            "then": {
                "anyOf": [
                    {"required": ["content"], "properties": {"content": _NOT_NULL}},
                    {
                        "required": ["tool_calls"],
                        "properties": {"tool_calls": {"type": "array", "minItems": 1}},
                    },
                ]
            },
        },
    ]
}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra=_MESSAGE_RULES)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = Field(False, strict=True)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = Field(False, strict=True)  # not "yes" or 1: the JSON type the spec says
    stream_options: StreamOptions | None = None
    conversation: str | None = None
    n: int | None = Field(None, ge=1, strict=True)


class ChatBody(ChatRequest):
    """What the route validates up front. The messages are checked one by one as the engine
    reads them (`parse_message`, engine/incoming.py): a full-history client's resent messages
    that are already stored are never parsed into records."""

    messages: list[Any] = Field(min_length=1)


# Fields Tether consumes itself; everything else in the body goes to the upstream as sent.
OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "conversation"})


def _invalid(exc: ValidationError, prefix: str = "") -> TetherError:
    first = exc.errors()[0]
    loc = first.get("loc", ())
    param = prefix + "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i or prefix else str(p))
        for i, p in enumerate(loc)
        if not (isinstance(p, str) and p in ("str", "list[dict[str,any]]"))
    )
    msg = first.get("msg", "invalid value")
    return TetherError(400, "invalid_request", f"{param or 'body'}: {msg}", param=param or None)


def _shallow(raw: dict[str, Any] | list[Any]) -> bool:
    """A message with no nested value but text parts cannot nest past the limit (the common
    case, checked without serialising it)."""
    values = raw.values() if isinstance(raw, dict) else raw
    for v in values:
        if isinstance(v, dict):
            return False
        if isinstance(v, list) and not all(
            isinstance(p, dict) and all(not isinstance(x, dict | list) for x in p.values())
            for p in v
        ):
            return False
    return True


def parse_chat_request(data: dict[str, Any]) -> ChatBody:
    try:
        return ChatBody.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


def parse_message(raw: Any, index: int, max_content_chars: int) -> Message:
    """Message `index` of a request, validated (400 naming it), within the content limit and
    the nesting limit (counted from the body: the body and `messages` are two levels)."""
    if isinstance(raw, dict | list) and not _shallow(raw):
        check_depth(raw, None, MAX_DEPTH - 2, f"messages[{index}]")
    try:
        m = ChatMessage.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(exc, f"messages[{index}]") from None
    content = m.content
    if isinstance(content, list):
        size = sum(len(str(p.get("text") or p.get("image_url") or "")) for p in content)
    else:
        size = len(content or "")
    if size > max_content_chars:
        raise TetherError(
            413,
            "content_too_large",
            f"message {index} holds {size:,} characters; the limit is {max_content_chars:,}",
            param=f"messages[{index}].content",
        )
    return Message(
        role=m.role,
        content=content,
        tool_calls=[c.model_dump() for c in m.tool_calls] if m.tool_calls else None,
        tool_call_id=m.tool_call_id,
        name=m.name,
        extra=m.model_extra or None,
    )


def check_limits(chat: ChatBody, max_messages: int, full_history: bool = False) -> None:
    """What Tether does not take on: several choices (400), more messages than the limit (413;
    content sizes are checked message by message, `parse_message`)."""
    if chat.n is not None and chat.n > 1:
        raise TetherError(
            400,
            "n_not_supported",
            f"n={chat.n}: Tether answers one choice per request (n=1), because a conversation "
            "stores one reply per turn. For several candidates, send several requests (with "
            "'X-Tether-Match: off' and no conversation id, each is a conversation of its own)",
            param="n",
        )
    # a full-history request resends what is stored: the limit applies to what it adds (the
    # engine checks that after the merge), so a long conversation's client can go on
    if len(chat.messages) > max_messages and not full_history:
        raise TetherError(
            413,
            "too_many_messages",
            f"{len(chat.messages)} messages in one request; the limit is {max_messages}",
            param="messages",
        )
