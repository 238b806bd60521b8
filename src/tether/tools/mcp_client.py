"""One MCP server as a `ToolSource`, through the official `mcp` SDK (2.x) as the client: a command
run as a child process (stdio) or a URL (Streamable HTTP).

A supervisor task per server connects, initializes, lists the tools, and then pings the server
every second; when the connection ends (the child exited, the URL stopped answering) the server
is marked down (its tools absent) and reconnected with backoff: 0.5 s doubling to 30 s, back to
0.5 s after a connection that lived a minute. Nothing here raises out of `start()` or the
supervisor: a server that cannot start is logged and retried. A call fails as soon as its
server is found down, not only at its timeout. A child's stderr is logged line by line (each cut
to 2,000 characters), never kept. A stdio child gets the SDK's small default environment (PATH,
HOME, LANG, …) plus the server's `env`: not Tether's own (its keys stay out of tool servers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import IO, Any

import orjson
import structlog
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import PaginatedRequestParams
from mcp_types import CONNECTION_CLOSED

from tether.config_tools import McpServerConfig
from tether.tools.base import Caller, ToolOutput, ToolSpec

log = structlog.get_logger("tether.tools")

VISIBLE_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
PING_EVERY = 1.0
PING_TIMEOUT = 10.0
START_TIMEOUT = 30.0
FIRST_DELAY, MAX_DELAY, STABLE_AFTER = 0.5, 30.0, 60.0
MAX_STDERR_LINE = 2000


class ToolError(Exception):
    """A call that could not be made or finished (the server is down, or died during it)."""


def visible_name(server: str, tool: str) -> str:
    """The name the model sees for a server's tool."""
    return f"mcp__{server}__{tool}"


def _valid(name: str) -> bool:
    return 0 < len(name) <= 64 and set(name) <= VISIBLE_NAME


class McpServer:
    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.name = config.name
        self._session: ClientSession | None = None
        self._tools: list[ToolSpec] = []
        self._down = asyncio.Event()  # set when the current connection ends
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._connected = False  # the current attempt got as far as up

    # -- ToolSource --------------------------------------------------------------------------
    def tools(self) -> list[ToolSpec]:
        return list(self._tools) if self._session is not None else []

    def up(self) -> bool:
        return self._session is not None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp:{self.name}")

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._mark_down()

    async def call(
        self, spec: ToolSpec, arguments: dict[str, Any], caller: Caller | None = None
    ) -> ToolOutput:
        """Call the tool (`caller` is not sent: an MCP server sees no tenant)."""
        session, down = self._session, self._down
        if session is None:
            raise ToolError(f"MCP server {self.name!r} is down")
        call = asyncio.ensure_future(session.call_tool(spec.remote_name, arguments))
        gone = asyncio.ensure_future(down.wait())
        try:
            await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not call.done():
                call.cancel()
        if not call.done() or call.cancelled():
            raise ToolError(f"MCP server {self.name!r} went down during the call")
        try:
            result = call.result()
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                if self._session is session:
                    self._mark_down()  # at once: the supervisor's next ping would notice too
                raise ToolError(f"MCP server {self.name!r} went down during the call") from exc
            raise ToolError(f"MCP server {self.name!r}: {exc.error.message}") from exc
        return ToolOutput(text=_text_of(result), error=bool(result.is_error))

    # -- the supervisor ----------------------------------------------------------------------
    async def _supervise(self) -> None:
        delay = FIRST_DELAY
        while not self._closing:
            began = time.monotonic()
            self._connected = False
            try:
                await self._connect_once()
                reason = "the connection ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # anyio's exception groups included: nothing escapes
                reason = _reason(exc)
            self._mark_down()
            if self._closing:
                return
            event = "mcp.down" if self._connected else "mcp.start_failed"
            log.warning(event, server=self.name, reason=reason, retry_in_s=delay)
            if time.monotonic() - began > STABLE_AFTER:
                delay = FIRST_DELAY
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

    async def _connect_once(self) -> None:
        async with AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            session = await stack.enter_async_context(ClientSession(read, write))
            async with asyncio.timeout(START_TIMEOUT):
                await session.initialize()
                self._tools = await self._list(session)
            self._down = asyncio.Event()
            self._session = session
            self._connected = True
            log.info("mcp.up", server=self.name, tools=[t.name for t in self._tools])
            while True:  # until a ping fails: the server exited or stopped answering
                await asyncio.sleep(PING_EVERY)
                async with asyncio.timeout(PING_TIMEOUT):
                    await session.send_ping()

    def _mark_down(self) -> None:
        self._session = None
        self._tools = []
        self._down.set()

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        config = self.config
        if config.url is not None:
            return _http(config.url, dict(config.headers))
        assert config.command is not None
        command, *args = config.command
        params = StdioServerParameters(command=command, args=args, env=dict(config.env) or None)
        return _stdio(params, self.name)

    async def _list(self, session: ClientSession) -> list[ToolSpec]:
        allowed = set(self.config.tools) if self.config.tools is not None else None
        specs = []
        for tool in await _all_tools(session):
            name = visible_name(self.name, tool.name)
            if allowed is not None and tool.name not in allowed:
                continue
            if not _valid(name):
                log.warning(
                    "mcp.tool_skipped",
                    server=self.name,
                    tool=tool.name[:100],
                    reason="its name is not a valid function name for the model",
                )
                continue
            schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
            specs.append(
                ToolSpec(
                    name=name,
                    description=tool.description or "",
                    parameters=schema or {"type": "object", "properties": {}},
                    source=f"mcp:{self.name}",
                    remote_name=tool.name,
                    approval=self.config.needs_approval(tool.name),
                    timeout=self.config.timeout,
                )
            )
        return specs


async def _all_tools(session: ClientSession) -> list[Any]:
    """Every page of the server's tool list."""
    tools: list[Any] = []
    cursor: str | None = None
    while True:
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


@asynccontextmanager
async def _http(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """The SDK's Streamable HTTP transport on a client of ours (it sends the server's
    `headers`), closed with it."""
    async with (
        create_mcp_http_client(headers=headers or None) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


@asynccontextmanager
async def _stdio(params: StdioServerParameters, server: str) -> AsyncIterator[Any]:
    """The SDK's stdio transport, the child's stderr going to our log through a pipe."""
    read_fd, write_fd = os.pipe()
    errlog = os.fdopen(write_fd, "w", buffering=1, errors="replace")
    reader = threading.Thread(
        target=_log_lines, args=(os.fdopen(read_fd, "rb"), server), daemon=True
    )
    reader.start()
    try:
        async with stdio_client(params, errlog=errlog) as streams:
            yield streams
    finally:
        errlog.close()  # the reader ends once the child's copy is closed too


def _log_lines(pipe: IO[bytes], server: str) -> None:
    with pipe:
        for raw in pipe:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                log.info("mcp.stderr", server=server, line=line[:MAX_STDERR_LINE])


def _text_of(result: Any) -> str:
    parts = []
    for item in result.content or ():
        if getattr(item, "type", None) == "text":
            parts.append(str(item.text))
        else:
            parts.append(f"[{getattr(item, 'type', 'content')} content not shown]")
    if not parts and result.structured_content is not None:
        return orjson.dumps(result.structured_content).decode()
    return "\n".join(parts)


def _reason(exc: BaseException) -> str:
    """One line for the log, the innermost cause of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:500]
