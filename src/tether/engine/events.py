"""Typed turn events: what a turn publishes as it runs. A protocol adapter (`Projection`)
renders each into the payloads its clients read; the engine knows no wire format.

A delta carries the upstream's own chunk too (`chunk`): the upstream speaks Chat Completions, so
that adapter passes the chunk's bytes through untouched, and any other reads `text`/`calls`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tether.errors import TetherError
from tether.model import Message
from tether.upstream.base import Chunk

if TYPE_CHECKING:
    from tether.engine.request import TurnInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class Started:
    """The turn knows where it runs (a stream's headers go out now)."""

    info: TurnInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class Compacted:
    conversation_id: str
    epoch: int
    tokens_before: int | None
    tokens_after: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    text: str  # may be empty (a chunk that only names the role, say)
    chunk: Chunk


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta:
    calls: list[dict[str, Any]]  # index, and the parts of id, name and arguments received
    chunk: Chunk


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    usage: dict[str, Any]
    estimated: bool  # Tether's own counts: the upstream sent none
    chunk: Chunk | None = None  # the upstream's usage chunk, when it sent one


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """The turn committed (rendered just before its commit, so a keyed turn stores it)."""

    info: TurnInfo
    reply: Message
    finish_reason: str
    model: str
    response: dict[str, Any] | None = None  # a JSON turn: the upstream's answer as it came


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    error: TetherError


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolStarted:
    """Tether runs one of the model's tool calls (a server tool: the client never runs it)."""

    round: int
    call_id: str
    name: str
    arguments: str  # redacted


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolAwaiting:
    """A call waits for a person's approval (POST …/turns/{turn}/approvals/{call_id})."""

    round: int
    call_id: str
    name: str
    arguments: str  # redacted
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolFinished:
    round: int
    call_id: str
    name: str
    status: str  # ok | error | timeout | denied | not_offered | invalid_arguments
    ms: float
    output_chars: int


TurnEvent = (
    Started
    | Compacted
    | TextDelta
    | ToolCallDelta
    | Usage
    | Finished
    | Failed
    | ToolStarted
    | ToolAwaiting
    | ToolFinished
)


class Projection(Protocol):
    """A protocol adapter for one turn: its events → the payloads its clients read (SSE event
    data, or the one JSON body), and the headers that say where it ran."""

    def render(self, event: TurnEvent) -> list[bytes]: ...

    def headers(self, info: TurnInfo) -> dict[str, str]: ...
