"""What a server-side tool is to the engine: its spec (the name the model sees, its JSON schema,
where it comes from, whether it needs approval, its timeout), what a call returns, and the
`ToolSource` protocol every source (the built-ins, one MCP server) implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    name: str  # what the model sees: `current_time`, `mcp__ledger__add`
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    source: str  # `builtin`, or `mcp:<server>`
    remote_name: str = ""  # the tool's own name at its source (an MCP server's name for it)
    approval: bool = False  # a call waits for a person's approval
    timeout: float = 60.0  # seconds per call

    def openai(self) -> dict[str, Any]:
        """The spec as a Chat Completions `tools` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutput:
    """A call's result as the model will read it. `error`: the tool failed and `text` says how."""

    text: str
    error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """Whose turn a call runs in: a tool that reads Tether's own data (conversation_search)
    answers from this tenant's only."""

    tenant_id: str
    conversation_id: str | None = None


# a tenant's search, as the conversation_search tool runs it: (tenant, query, limit) → text
Searcher = Callable[[str, str, int], Awaitable[ToolOutput]]


class ToolSource(Protocol):
    """One place tools come from. `tools()` is what it offers now: a source that is down offers
    nothing. `call` returns the tool's output or raises (the registry turns any exception and
    any timeout into an error output the model sees)."""

    name: str

    def tools(self) -> list[ToolSpec]: ...

    def up(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def call(
        self, spec: ToolSpec, arguments: dict[str, Any], caller: Caller | None = None
    ) -> ToolOutput: ...
