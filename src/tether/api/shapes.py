"""The shape of every response body the API answers, as TypedDicts: the routes build their
bodies as these typed dict literals (mypy checks them; nothing is validated at run time, so the
hot path pays nothing), and `/openapi.json`'s component schemas are generated from them
(api/openapi_schemas.py). One description of each shape.

Bodies passed through from the upstream (a chat completion, the model list) say so: the fields
Tether guarantees, extra fields allowed. Pydantic needs `typing_extensions.TypedDict` on 3.11.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, cast

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from tether.model import Conversation, Message
from tether.protocols.common import ForkedFrom, TetherInfo
from tether.upstream.wire import chat_message

_EXTRA = ConfigDict(extra="allow")  # passed through: more fields may come
_CLOSED = ConfigDict(extra="ignore")  # inside an open shape, so as not to inherit its config
Count = Annotated[int, Field(ge=0)]
Role = Literal["system", "developer", "user", "assistant", "tool"]
TurnStatus = Literal[
    "running", "awaiting_approval", "completed", "failed", "incomplete", "cancelled"
]


# -- errors ----------------------------------------------------------------------------------


class ErrorObject(TypedDict):
    message: str
    type: Annotated[str, Field(examples=["invalid_request_error", "not_found_error", "api_error"])]
    param: str | None
    code: Annotated[str, Field(examples=["conversation_not_found"])]


class Error(TypedDict):
    """Every error: the OpenAI error envelope."""

    error: ErrorObject


# -- chat completions (passed through from the upstream, plus `tether`) -------------------------


@with_config(_EXTRA)
class Choice(TypedDict):
    index: NotRequired[int]
    message: NotRequired[dict[str, Any]]
    finish_reason: NotRequired[str | None]


@with_config(_EXTRA)
class ChatCompletion(TypedDict):
    """The upstream model's chat.completion, as it answered, plus `tether`."""

    id: NotRequired[str]
    object: NotRequired[str]
    created: NotRequired[int]
    model: NotRequired[str]
    choices: list[Choice]
    usage: NotRequired[dict[str, Any] | None]
    tether: TetherInfo


@with_config(_EXTRA)
class ChunkChoice(TypedDict):
    index: NotRequired[int]
    delta: NotRequired[dict[str, Any]]
    finish_reason: NotRequired[str | None]


@with_config(_EXTRA)
class ChatCompletionChunk(TypedDict):
    """One chat.completion.chunk of a stream, as the upstream sent it; the one with
    `finish_reason` also carries `tether`."""

    id: NotRequired[str]
    object: NotRequired[str]
    created: NotRequired[int]
    model: NotRequired[str]
    choices: list[ChunkChoice]
    usage: NotRequired[dict[str, Any] | None]
    tether: NotRequired[TetherInfo]


class ChatCompletionEvent(TypedDict):
    """One server-sent event (SSE comments, such as the compaction notice and keep-alive
    pings, are not events)."""

    data: Annotated[
        str,
        Field(
            description="A chat.completion.chunk as JSON (ChatCompletionChunk), an error "
            "envelope as JSON if the turn failed after its first token, or `[DONE]` at the end."
        ),
    ]
    event: NotRequired[Literal["message"]]
    id: NotRequired[
        Annotated[
            str,
            Field(
                pattern="^[0-9]+$",
                description="the event's place in the turn's stream, for Last-Event-ID",
            ),
        ]
    ]


# -- models (passed through from the upstream) -----------------------------------------------


@with_config(_EXTRA)
class Model(TypedDict):
    id: str
    object: NotRequired[str]
    created: NotRequired[int]
    owned_by: NotRequired[str]


@with_config(_EXTRA)
class ModelList(TypedDict):
    object: NotRequired[Literal["list"]]
    data: list[Model]


# -- health ----------------------------------------------------------------------------------


class Health(TypedDict):
    status: Literal["ok", "draining", "storage_unavailable"]
    database: Annotated[str, Field(examples=["sqlite"])]
    upstream: Annotated[bool, Field(description="whether an upstream is set")]
    problem: NotRequired[Annotated[str, Field(description="why storage is unavailable")]]


class ReadyChecks(TypedDict):
    database: Annotated[str, Field(description="ok, or unavailable: why")]
    upstream: Annotated[str, Field(description="ok, or unavailable: why")]


class Ready(TypedDict):
    status: Literal["ready"]
    checks: ReadyChecks


# -- conversations ---------------------------------------------------------------------------


class ConversationBody(TypedDict):
    id: str
    object: Literal["conversation"]
    title: str | None
    model: str | None
    messages: Annotated[int, Field(ge=0, description="the last seq")]
    turns: Count
    epoch: Count
    forked_from: ForkedFrom | None
    created_at: float
    updated_at: float


@with_config(_EXTRA)
class StoredMessage(TypedDict):
    """A stored message as the model sees it (extra fields the client sent are kept), with
    its place in the transcript."""

    seq: Annotated[int, Field(ge=1)]
    role: Role
    content: str | list[Any] | None
    tool_calls: NotRequired[list[dict[str, Any]]]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]


@with_config(_EXTRA)
class ListedMessage(StoredMessage):
    """A stored message, with the turn that stored it and when."""

    turn_id: str | None
    created_at: float


class MessageList(TypedDict):
    object: Literal["list"]
    conversation_id: str
    data: list[ListedMessage]
    has_more: bool


class Checkpoint(TypedDict):
    """A compaction: its summary stands in for messages up to covers_through_seq."""

    epoch: int
    covers_through_seq: int
    prune_through_seq: int
    tokens_before: int
    tokens_after: int
    model: str | None
    prompt_version: str
    ledger_entries: int
    summary_chars: int
    stats: dict[str, Any]
    turn_id: str | None
    created_at: float


class Context(TypedDict):
    object: Literal["conversation.context"]
    conversation_id: str
    model: str
    window: int
    reserved_output: int
    threshold: float
    compact_above_tokens: int
    tokens: int
    last_reported_prompt_tokens: int | None
    epoch: int
    covers_through_seq: int
    messages_total: int
    messages_in_view: int
    checkpoints: list[Checkpoint]
    view: NotRequired[
        Annotated[
            list[dict[str, Any]],
            Field(description="with view=true: exactly the messages the model sees"),
        ]
    ]
    summary: NotRequired[str | None]
    ledger: NotRequired[list[str]]


@with_config(_EXTRA)
class CompactResult(TypedDict):
    """With compacted=true, the new checkpoint's fields too."""

    conversation_id: str
    compacted: bool
    epoch: int
    reason: NotRequired[Annotated[str, Field(description="why nothing was compacted")]]


# -- turns -----------------------------------------------------------------------------------


class ToolStepBody(TypedDict):
    """One server-side tool call of a turn, as journaled when it completed."""

    call_id: str
    round: int
    tool: str
    source: Annotated[str, Field(description="`builtin`, `mcp:<server>`, or `none` (not run)")]
    arguments: str
    status: Literal[
        "ok", "error", "timeout", "denied", "not_offered", "invalid_arguments", "interrupted"
    ]
    output_chars: int
    started_at: float
    finished_at: float


class Turn(TypedDict):
    id: str
    object: Literal["conversation.turn"]
    conversation_id: str
    status: TurnStatus
    model: str | None
    usage: dict[str, Any] | None
    error: ErrorObject | None
    notes: Annotated[
        dict[str, Any] | None,
        Field(
            description="what Tether did besides the model call: `compaction` (paused or "
            "failed), `dangling_tool_calls` (the unanswered tool calls it closed), "
            "`tool_rounds_run`, `tool_rounds` (stopped at the cap), `usage_all_calls` (the "
            "usage of every model call of a turn with server tools, summed)"
        ),
    ]
    started_at: float
    finished_at: float | None
    messages: Annotated[
        list[StoredMessage], Field(description="the messages the turn stored, once completed")
    ]
    tool_steps: Annotated[
        list[ToolStepBody],
        Field(description="the server-side tool calls it ran, each journaled as it completed"),
    ]


class ApprovalBody(TypedDict):
    """A server tool call waiting for a person's approval."""

    turn_id: str
    call_id: str
    tool: str
    arguments: str
    since: float


class ApprovalList(TypedDict):
    object: Literal["list"]
    data: list[ApprovalBody]


class ApprovalDecision(TypedDict):
    turn_id: str
    call_id: str
    decision: Literal["approve", "deny"]


# every body above that a route answers, by its component name in /openapi.json
RESPONSE_SHAPES: dict[str, Any] = {
    "Error": Error,
    "ChatCompletion": ChatCompletion,
    "ChatCompletionChunk": ChatCompletionChunk,
    "ChatCompletionEvent": ChatCompletionEvent,
    "Model": Model,
    "ModelList": ModelList,
    "Health": Health,
    "Ready": Ready,
    "Conversation": ConversationBody,
    "MessageList": MessageList,
    "Context": Context,
    "CompactResult": CompactResult,
    "Turn": Turn,
    "ApprovalList": ApprovalList,
    "ApprovalDecision": ApprovalDecision,
}


# -- building bodies -------------------------------------------------------------------------


def conversation_body(conv: Conversation) -> ConversationBody:
    forked: ForkedFrom | None = None
    if conv.forked_from_id:
        forked = {"conversation_id": conv.forked_from_id, "seq": conv.forked_from_seq or 0}
    return {
        "id": conv.id,
        "object": "conversation",
        "title": conv.title,
        "model": conv.model,
        "messages": conv.last_seq,
        "turns": conv.turn_count,
        "epoch": conv.epoch,
        "forked_from": forked,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
    }


def stored_message(m: Message) -> StoredMessage:
    """The message as the model sees it, and its seq (the server's fields last: a client's
    extra message fields never override them). Extra fields make it wider than the type."""
    return cast(StoredMessage, {**chat_message(m), "seq": m.seq})


def listed_message(m: Message) -> ListedMessage:
    body = {**chat_message(m), "seq": m.seq, "turn_id": m.turn_id, "created_at": m.created_at}
    return cast(ListedMessage, body)
