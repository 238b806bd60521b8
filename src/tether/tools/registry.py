"""The one registry the engine asks for "the tools this turn may use" and through which it runs
them: the configured sources narrowed by the tenant (`[tenants.NAME] tools`) and the request
(`X-Tether-Tools`), each call bounded (schema check, timeout, output cap) and any failure turned
into an error output the model reads."""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
import structlog

from tether.config import Settings
from tether.tools.base import Caller, Searcher, ToolOutput, ToolSource, ToolSpec
from tether.tools.builtin import Builtins

log = structlog.get_logger("tether.tools")

ALL = "all"
NONE = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class Ran:
    """One call's outcome: what the model reads, and what the journal keeps."""

    output: ToolOutput
    status: str  # ok | error | timeout | invalid_arguments
    output_chars: int  # the whole output, before the cap
    started_at: float
    finished_at: float


def parse_selection(header: str | None) -> frozenset[str] | None:
    """`X-Tether-Tools`: `all` (or absent) → None; `none` → empty; else the names (patterns)."""
    if header is None or header.strip().lower() in ("", ALL):
        return None
    if header.strip().lower() == NONE:
        return frozenset()
    return frozenset(n.strip() for n in header.split(",") if n.strip())


def _allowed(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def build(settings: Settings, searcher: Searcher | None = None) -> Registry | None:
    """The registry the settings describe; None when no tool is configured (then every request
    reaches the upstream as it came). `searcher`: the store's search, for conversation_search."""
    sources: list[ToolSource] = []
    if settings.builtin_tools:
        sources.append(Builtins(settings.builtin_tools, searcher))
    if settings.mcp_servers:
        from tether.tools.mcp_client import McpServer  # a heavy import: only when used

        sources.extend(McpServer(config) for config in settings.mcp_servers)
    return Registry(sources, settings) if sources else None


class Registry:
    def __init__(self, sources: list[ToolSource], settings: Settings) -> None:
        self.sources = sources
        self.settings = settings
        self._validators: dict[str, tuple[dict[str, Any], Any]] = {}

    async def start(self) -> None:
        for source in self.sources:
            await source.start()

    async def close(self) -> None:
        for source in self.sources:
            await source.close()

    def _validator(self, spec: ToolSpec) -> Any:
        """The tool's schema compiled once (jsonschema.validate checks the schema itself on
        every call: 1.06 ms against 0.006 ms, measured)."""
        cached = self._validators.get(spec.name)
        if cached is None or cached[0] is not spec.parameters:
            try:
                cls = jsonschema.validators.validator_for(spec.parameters)
                cls.check_schema(spec.parameters)
                validator = cls(spec.parameters)
            except jsonschema.SchemaError:
                validator = None  # the tool's own schema is broken: its source checks
            cached = self._validators[spec.name] = (spec.parameters, validator)
        return cached[1]

    def available(self) -> dict[str, tuple[ToolSpec, ToolSource]]:
        """Every tool a source offers now, by the name the model sees."""
        found: dict[str, tuple[ToolSpec, ToolSource]] = {}
        for source in self.sources:
            for spec in source.tools():
                found.setdefault(spec.name, (spec, source))
        return found

    def offered(self, tenant_id: str, selection: frozenset[str] | None) -> dict[str, ToolSpec]:
        """The server tools a turn of this tenant may use, narrowed by the request."""
        tenant = self.settings.tenants.get(tenant_id)
        offer = {}
        for name, (spec, _) in self.available().items():
            if tenant is not None and tenant.tools is not None and not _allowed(name, tenant.tools):
                continue
            if selection is not None and not _allowed(name, selection):
                continue
            offer[name] = spec
        return offer

    async def run(self, spec: ToolSpec, raw_arguments: str, caller: Caller | None = None) -> Ran:
        """Run one call. Never raises (but for cancellation): a failure is an error output."""
        started = time.time()
        cap = self.settings.max_tool_output_chars

        def done(text: str, status: str) -> Ran:
            shown = text
            if len(text) > cap:
                shown = (
                    text[:cap] + f"\n[tool output truncated: {len(text):,} characters, the "
                    f"first {cap:,} shown (TETHER_MAX_TOOL_OUTPUT_CHARS)]"
                )
            return Ran(
                output=ToolOutput(text=shown, error=status != "ok"),
                status=status,
                output_chars=len(text),
                started_at=started,
                finished_at=time.time(),
            )

        arguments, problem = _arguments(raw_arguments, self._validator(spec))
        if problem is not None:
            return done(problem, "invalid_arguments")
        found = self.available().get(spec.name)
        if found is None:
            return done(
                f"error: the tool {spec.name} is not available now (its server is down)", "error"
            )
        source = found[1]
        try:
            async with asyncio.timeout(spec.timeout):
                output = await source.call(spec, arguments, caller)
        except TimeoutError:
            return done(
                f"error: the tool {spec.name} did not answer within {spec.timeout:g} s", "timeout"
            )
        except Exception as exc:
            log.warning("tool.failed", tool=spec.name, error=str(exc)[:500])
            return done(f"error: the tool {spec.name} failed: {exc}", "error")
        return done(output.text, "error" if output.error else "ok")


def _arguments(raw: str, validator: Any) -> tuple[dict[str, Any], str | None]:
    """The call's arguments, checked against the tool's schema; or the problem, for the model."""
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError as exc:
        return {}, f"error: the arguments are not valid JSON ({exc}); nothing was run"
    if not isinstance(value, dict):
        return {}, "error: the arguments must be a JSON object; nothing was run"
    error = jsonschema.exceptions.best_match(validator.iter_errors(value)) if validator else None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        return {}, f"error: invalid arguments at {where}: {error.message}; nothing was run"
    return value, None
