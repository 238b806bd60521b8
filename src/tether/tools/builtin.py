"""Tether's own tools, always available (unless a tenant or a request narrows them away)."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

from tether.tools.base import ToolOutput, ToolSpec

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


BUILTINS = {spec.name: spec for spec in (CURRENT_TIME,)}


class Builtins:
    """The built-in tools that are switched on (TETHER_BUILTIN_TOOLS) as one `ToolSource`."""

    name = "builtin"

    def __init__(self, enabled: list[str]) -> None:
        unknown = sorted(set(enabled) - BUILTINS.keys())
        if unknown:
            raise ValueError(f"no built-in tool {unknown} (there are: {sorted(BUILTINS)})")
        self.enabled = [BUILTINS[name] for name in enabled]

    def tools(self) -> list[ToolSpec]:
        return list(self.enabled)

    def up(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def call(self, spec: ToolSpec, arguments: dict[str, Any]) -> ToolOutput:
        if spec.remote_name == "current_time":
            return current_time(arguments.get("timezone"))
        return ToolOutput(text=f"no built-in tool {spec.remote_name!r}", error=True)


def current_time(timezone: str | None) -> ToolOutput:
    if not timezone:
        return ToolOutput(text=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return ToolOutput(text=f"unknown time zone {timezone!r}", error=True)
    return ToolOutput(text=datetime.datetime.now(zone).isoformat(timespec="seconds"))
