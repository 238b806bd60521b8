"""The request bodies of the conversation management routes, validated with pydantic at the
edge (their JSON schemas go into /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from tether.errors import TetherError

MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]


class ConversationPatch(BaseModel):
    """Set the title (null clears it) and/or replace the metadata (at most 16 string pairs)."""

    model_config = ConfigDict(extra="forbid")
    title: Annotated[str, StringConstraints(max_length=256)] | None = None
    metadata: Metadata | None = None


class ConversationCreate(BaseModel):
    """A new conversation (OpenAI's Conversations API): its first items and its metadata."""

    model_config = ConfigDict(extra="forbid")
    items: list[dict[str, Any]] | None = None
    metadata: Metadata | None = None


class ItemsCreate(BaseModel):
    """Items to add at the end of the conversation, without running the model."""

    model_config = ConfigDict(extra="forbid")
    items: Annotated[list[dict[str, Any]], Field(min_length=1)]


class ForkRequest(BaseModel):
    """A new conversation holding copies of messages 1..at_seq (`id`: its id; default: minted)."""

    model_config = ConfigDict(extra="forbid")
    at_seq: Annotated[int, Field(ge=1)]
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")] | None = None


class AppendRequest(BaseModel):
    """Messages to store at the end of the transcript, without running the model."""

    model_config = ConfigDict(extra="forbid")
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]


M = TypeVar("M", bound=BaseModel)


def parsed(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise TetherError(
            400,
            "invalid_request",
            f"{where}: {first['msg']}" if where else first["msg"],
            param=where,
        ) from None


REQUESTS: dict[str, type[BaseModel]] = {
    "ConversationPatch": ConversationPatch,
    "ForkRequest": ForkRequest,
    "AppendRequest": AppendRequest,
    "ConversationCreate": ConversationCreate,
    "ItemsCreate": ItemsCreate,
}


class CreateResponse(BaseModel):
    """A Responses API request (what Tether reads of it; other fields are echoed or ignored):
    `input` a string or a list of items (message, function_call, function_call_output)."""

    model_config = ConfigDict(extra="allow", strict=True)  # `top_p: false` is not 0.0
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    store: bool | None = None
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    metadata: Metadata | None = None


REQUESTS["CreateResponse"] = CreateResponse


class CompactRequest(BaseModel):
    """`POST /v1/responses/compact`: `model`, and `input` and/or `previous_response_id` (or
    `conversation`) — what to compact."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[dict[str, Any]] | None = None
    previous_response_id: str | None = None
    instructions: str | None = None


REQUESTS["CompactRequest"] = CompactRequest
