"""The response bodies of the conversation management, search and Hermes-compatible session
routes, as TypedDicts like api/shapes.py's (api/openapi_schemas.py generates both)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from tether.api.shapes import ConversationBody

Count = Annotated[int, Field(ge=0)]


class CheckpointSummary(TypedDict):
    """A compaction: the summary stands in for messages covers_from_seq..covers_through_seq."""

    epoch: Count
    covers_from_seq: int
    covers_through_seq: Count
    tokens_before: int | None
    tokens_after: int | None
    model: str | None
    created_at: float
    summary: str | None


class ContextUse(TypedDict):
    tokens: Count
    window: Count
    threshold: float
    compact_above_tokens: Count
    messages_in_view: Count
    last_reported_prompt_tokens: int | None


class ConversationDetail(ConversationBody):
    """A conversation's record with its metadata, checkpoints, aliases and context use."""

    metadata: dict[str, str]
    message_count: Count
    aliases: list[str]
    checkpoints: list[CheckpointSummary]
    context: ContextUse


class ConversationList(TypedDict):
    object: Literal["list"]
    data: list[ConversationBody]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ConversationDeleted(TypedDict):
    id: str
    object: Literal["conversation.deleted"]
    deleted: Literal[True]
    removed: dict[str, int]


class MessagesAppended(TypedDict):
    object: Literal["conversation.messages.appended"]
    conversation_id: str
    turn_id: str
    first_seq: int
    last_seq: int


class ExportedConversation(TypedDict):
    id: str
    title: str | None
    model: str | None
    system_prompt: str | None
    metadata: dict[str, str]
    aliases: list[str]
    forked_from: dict[str, Any] | None
    created_at: float
    updated_at: float


class ExportedCheckpoint(TypedDict):
    epoch: Count
    covers_through_seq: Count
    summary: str | None
    tokens_before: int | None
    tokens_after: int | None
    model: str | None
    created_at: float


class ConversationExport(TypedDict):
    """The whole transcript (`format=json`; `format=markdown` answers text/markdown instead),
    which `tether conversations import` reads back."""

    object: Literal["tether.conversation.export"]
    version: Literal[1]
    conversation: ExportedConversation
    messages: list[dict[str, Any]]
    checkpoints: list[ExportedCheckpoint]


class SearchHitBody(TypedDict):
    conversation_id: str
    title: str | None
    kind: Literal["message", "summary"]
    seq: int
    epoch: int | None
    role: str | None
    snippet: str
    highlights: Annotated[
        list[tuple[int, int]],
        Field(description="[start, end) offsets (code points) of the matches in snippet"),
    ]
    created_at: float


class SearchResults(TypedDict):
    object: Literal["list"]
    query: str
    data: list[SearchHitBody]


class HermesSession(TypedDict):
    """A conversation in the shape of a session of Hermes' API server (`/api/sessions`)."""

    id: str
    source: str
    user_id: str | None
    model: str | None
    title: str | None
    started_at: float
    ended_at: float | None
    end_reason: str | None
    message_count: Count
    parent_session_id: str | None
    last_active: float
    _lineage_root_id: str
    aliases: list[str]
    tool_call_count: NotRequired[Count]
    preview: NotRequired[str | None]


class HermesSessionList(TypedDict):
    object: Literal["list"]
    data: list[HermesSession]
    limit: Count
    offset: Count
    has_more: bool


class HermesMessage(TypedDict):
    id: int
    session_id: str
    role: str
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    tool_name: str | None
    timestamp: float
    token_count: int | None
    finish_reason: str | None


class HermesMessageList(TypedDict):
    object: Literal["list"]
    session_id: str
    data: list[HermesMessage]


MANAGE_SHAPES = {
    "ConversationDetail": ConversationDetail,
    "ConversationList": ConversationList,
    "ConversationDeleted": ConversationDeleted,
    "MessagesAppended": MessagesAppended,
    "ConversationExport": ConversationExport,
    "SearchResults": SearchResults,
    "HermesSession": HermesSession,
    "HermesSessionList": HermesSessionList,
    "HermesMessageList": HermesMessageList,
}


@with_config(ConfigDict(extra="allow"))
class ResponseBody(TypedDict):
    """A Responses API `response` object (every field the Open Responses spec requires; the
    rest as the spec describes them), plus `conversation` and `tether`."""

    id: str
    object: Literal["response"]
    created_at: int
    completed_at: int | None
    status: str
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    previous_response_id: str | None
    conversation: NotRequired[dict[str, str] | None]  # null: store false, in none


@with_config(ConfigDict(extra="allow"))
class ResponseEvent(TypedDict):
    """One event of a streamed response (`response.created`, `response.output_text.delta`, …):
    its type, its sequence number, the fields its type has."""

    type: str
    sequence_number: Count


class ResponseItemList(TypedDict):
    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


@with_config(ConfigDict(extra="allow"))
class ConversationItem(TypedDict):
    """One item of a conversation: a `message` (role, content parts), a `function_call` or a
    `function_call_output`, with the fields its type has."""

    type: Literal["message", "function_call", "function_call_output"]
    id: str
    status: str


class CompactedResponse(TypedDict):
    """A `response.compaction` object: the user messages kept, then one `compaction` item."""

    id: str
    object: Literal["response.compaction"]
    created_at: int
    output: list[dict[str, Any]]
    usage: dict[str, Any]


class ResponseDeleted(TypedDict):
    id: str
    object: Literal["response"]
    deleted: bool


MANAGE_SHAPES["CompactedResponse"] = CompactedResponse
MANAGE_SHAPES["ResponseDeleted"] = ResponseDeleted
MANAGE_SHAPES["ConversationItem"] = ConversationItem
MANAGE_SHAPES["ResponseObject"] = ResponseBody
MANAGE_SHAPES["ResponseItemList"] = ResponseItemList
MANAGE_SHAPES["ResponseEvent"] = ResponseEvent
