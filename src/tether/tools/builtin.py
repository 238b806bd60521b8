"""Tether's own tools, switched on by TETHER_BUILTIN_TOOLS (then a tenant or a request may
narrow them away): `current_time`, and `conversation_search` over the caller's own tenant."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

from tether.tools.base import Caller, Searcher, ToolOutput, ToolSpec

CURRENT_TIME = ToolSpec(
    name="current_time",
    description="The current date and time, in ISO 8601, in UTC or in an IANA time zone.",
    parameters={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "An IANA time zone such as `Europe/Paris` (default UTC).",
            }
        },
        "additionalProperties": False,
    },
    source="builtin",
    remote_name="current_time",
    timeout=5.0,
)


CONVERSATION_SEARCH = ToolSpec(
    name="conversation_search",
    description="Full-text search across this user's stored conversations (messages, tool "
    "outputs and compaction summaries). Returns the best hits with their conversation id, "
    'message seq and a snippet. Words must all occur; use "quotes" for a phrase, word* '
    "for a prefix.",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 512},
            "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    source="builtin",
    remote_name="conversation_search",
    timeout=10.0,
)


BUILTINS = {spec.name: spec for spec in (CURRENT_TIME, CONVERSATION_SEARCH)}


class Builtins:
    """The built-in tools that are switched on (TETHER_BUILTIN_TOOLS) as one `ToolSource`."""

    name = "builtin"

    def __init__(self, enabled: list[str], searcher: Searcher | None = None) -> None:
        unknown = sorted(set(enabled) - BUILTINS.keys())
        if unknown:
            raise ValueError(f"no built-in tool {unknown} (there are: {sorted(BUILTINS)})")
        self.enabled = [BUILTINS[name] for name in enabled]
        self.searcher = searcher

    def tools(self) -> list[ToolSpec]:
        return list(self.enabled)

    def up(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def call(
        self, spec: ToolSpec, arguments: dict[str, Any], caller: Caller | None = None
    ) -> ToolOutput:
        if spec.remote_name == "current_time":
            return current_time(arguments.get("timezone"))
        if spec.remote_name == "conversation_search":
            if self.searcher is None or caller is None:
                return ToolOutput(text="conversation_search is not available here", error=True)
            limit = int(arguments.get("limit") or 5)
            return await self.searcher(caller.tenant_id, str(arguments["query"]), limit)
        return ToolOutput(text=f"no built-in tool {spec.remote_name!r}", error=True)


def current_time(timezone: str | None) -> ToolOutput:
    if not timezone:
        return ToolOutput(text=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return ToolOutput(text=f"unknown time zone {timezone!r}", error=True)
    return ToolOutput(text=datetime.datetime.now(zone).isoformat(timespec="seconds"))
