"""One MCP server as a `ToolSource`, with the official `mcp` SDK (2.x) as the client: a command
run as a child process over stdio, or a URL over Streamable HTTP (with the config's `headers`).

`start()` only launches a supervisor task. It connects, initializes, lists the tools and marks
the server up; then it pings the server every second (a ping unanswered in 5 s, or failing,
ends the connection; so does a call that found the connection closed). A connection that ends
or cannot be made marks the server down (it offers no tools), is logged, and is retried with
backoff: 0.5 s doubling to 30 s, back to 0.5 s after a connection that lived 30 s. Nothing
raises out of `start()` or the supervisor.

A stdio child's environment is the SDK's minimal one (HOME, LOGNAME, PATH, SHELL, TERM, USER
from Tether's environment) plus LANG and then the config's `env`: not all of `os.environ`, so
Tether's own secrets stay out of tool servers. Its stderr is logged line by line
(`mcp_stderr.py`).

`call()` raises `ToolError` when the server is down, the call times out, or the connection
ends during it (the SDK fails every pending request with CONNECTION_CLOSED the moment its
session ends, so a call never waits for its timeout on a dead server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import mcp_types as types
import structlog
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client import Transport
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from tether.config import McpServerConfig
from tether.tools.base import ToolOutput, ToolSpec
from tether.tools.mcp_stderr import stderr_pipe

log = structlog.get_logger("tether.tools")

VISIBLE_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
PING_EVERY, PING_TIMEOUT = 1.0, 5.0
START_TIMEOUT = 30.0  # to initialize and list the tools
FIRST_DELAY, MAX_DELAY, STABLE_AFTER = 0.5, 30.0, 30.0
MAX_LIST_PAGES = 100
MAX_PART = 1000  # characters of a non-text content part's JSON rendering
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


class ToolError(Exception):
    """A call that could not be made or finished: the server is down, the call timed out, or
    the connection ended during it."""


def visible_name(server: str, tool: str) -> str:
    """The name the model sees for a server's tool: `mcp__<server>__<tool>`."""
    return f"mcp__{server}__{tool}"


@dataclass(kw_only=True, slots=True)
class _Connection:
    """A live session and what it offers; `lost` is set when a call finds it closed."""

    session: ClientSession
    tools: list[ToolSpec]
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class McpServer:
    """The tools of one configured MCP server (`McpServerConfig`), kept connected."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.name = config.name
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._up_at: float | None = None  # when the current connection came up
        self._why: str | None = None  # why the last connection ended

    def tools(self) -> list[ToolSpec]:
        """The server's tools while it is up, else []."""
        conn = self._conn
        return list(conn.tools) if conn is not None else []

    def up(self) -> bool:
        return self._conn is not None

    async def start(self) -> None:
        """Launch the supervisor (connect, and reconnect when the connection ends); returns at
        once."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp-{self.name}")

    async def close(self) -> None:
        """Stop the supervisor, close the session, end the child process. Idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._conn = None

    async def call(self, spec: ToolSpec, arguments: dict[str, Any]) -> ToolOutput:
        """Call `spec.remote_name` within `spec.timeout`; raises `ToolError` if it cannot."""
        conn = self._conn
        if conn is None:
            raise ToolError(f"MCP server {self.name!r} is down")
        try:
            async with asyncio.timeout(spec.timeout):
                result = await conn.session.call_tool(spec.remote_name, arguments)
        except TimeoutError:
            raise ToolError(
                f"MCP tool {spec.remote_name!r} of server {self.name!r} timed out after "
                f"{spec.timeout:g} s"
            ) from None
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                conn.lost.set()
                raise ToolError(
                    f"MCP server {self.name!r} went down during the call to {spec.remote_name!r}"
                ) from None
            raise ToolError(f"MCP server {self.name!r}: {exc.message}") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            conn.lost.set()
            raise ToolError(f"MCP server {self.name!r}: connection broken ({exc!r})") from None
        return ToolOutput(text=render(result), error=result.is_error)

    async def _supervise(self) -> None:
        """Connect, serve until the connection ends, wait out the backoff; until closed."""
        delay = FIRST_DELAY
        while not self._closed:
            self._up_at, self._why = None, None
            failure = "the connection ended"
            try:
                await self._connection()
            except Exception as exc:  # anything: logged, then retried
                failure = _describe(exc)
            finally:
                self._conn = None
            reason = self._why or failure
            if self._up_at is None:
                log.warning("mcp.start_failed", server=self.name, reason=reason, retry_in=delay)
            else:
                if time.monotonic() - self._up_at > STABLE_AFTER:
                    delay = FIRST_DELAY
                log.warning("mcp.down", server=self.name, reason=reason, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

    async def _connection(self) -> None:
        """One connection: open, initialize, list, mark up, then watch until it ends (noting
        when it came up in `_up_at` and why it ended in `_why`)."""
        async with AsyncExitStack() as stack:
            session = await self._open_session(stack)
            with anyio.fail_after(START_TIMEOUT):
                await session.initialize()
                listed = await _list_tools(session)
            conn = _Connection(session=session, tools=self._specs(listed))
            self._conn, self._up_at = conn, time.monotonic()
            log.info("mcp.up", server=self.name, tools=[spec.name for spec in conn.tools])
            try:
                self._why = await _watch(conn)
            finally:
                self._conn = None

    async def _open_session(self, stack: AsyncExitStack) -> ClientSession:
        """A session over the config's transport, entered on `stack`."""
        config, errlog = self.config, None
        transport: Transport
        if config.url is not None:
            client = httpx2.AsyncClient(
                headers=config.headers, timeout=httpx2.Timeout(30.0, read=300.0)
            )
            await stack.enter_async_context(client)
            transport = streamable_http_client(config.url, http_client=client)
        else:
            assert config.command is not None  # the config has exactly one of command and url
            env = {"LANG": os.environ["LANG"]} if "LANG" in os.environ else {}
            params = StdioServerParameters(
                command=config.command[0], args=config.command[1:], env=env | config.env
            )
            errlog = stderr_pipe(self.name)
            transport = stdio_client(params, errlog=errlog)
        try:
            read, write = await stack.enter_async_context(transport)
        finally:
            if errlog is not None:
                errlog.close()  # the child has its own copy; the pump ends when the child does
        return await stack.enter_async_context(ClientSession(read, write))

    def _specs(self, listed: list[types.Tool]) -> list[ToolSpec]:
        """The specs of the listed tools the config lets through, with valid visible names."""
        config, specs = self.config, []
        for tool in listed:
            name = visible_name(self.name, tool.name)
            if config.tools is not None and tool.name not in config.tools:
                log.info("mcp.tool_skipped", server=self.name, tool=tool.name, reason="not listed")
                continue
            if not VISIBLE_NAME.fullmatch(name):
                log.warning("mcp.tool_skipped", server=self.name, tool=tool.name, reason="name")
                continue
            specs.append(
                ToolSpec(
                    name=name,
                    description=tool.description or "",
                    parameters=tool.input_schema or dict(EMPTY_SCHEMA),
                    source=f"mcp:{self.name}",
                    remote_name=tool.name,
                    approval=config.needs_approval(tool.name),
                    timeout=config.timeout,
                )
            )
        return specs


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    """Every page of the server's tool listing."""
    listed: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
        page = await session.list_tools(params=params)
        listed.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return listed


async def _watch(conn: _Connection) -> str:
    """Ping the server until the connection ends; returns why it ended."""
    while True:
        with anyio.move_on_after(PING_EVERY):
            await conn.lost.wait()
            return "the connection closed during a call"
        try:
            with anyio.fail_after(PING_TIMEOUT):
                await conn.session.send_ping()
        except TimeoutError:
            return f"no answer to a ping within {PING_TIMEOUT:g} s"
        except Exception as exc:  # the connection closed, or the transport failed
            return f"ping failed: {_describe(exc)}"


def render(result: types.CallToolResult) -> str:
    """A call's result as text: its text parts joined, other parts as short JSON, and the
    structured content as JSON when there is no text."""
    parts = [_render_part(block) for block in result.content]
    texts = any(isinstance(block, types.TextContent) for block in result.content)
    if not texts and result.structured_content is not None:
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def _render_part(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    dumped = block.model_dump(mode="json", by_alias=True, exclude_none=True)
    for holder in (dumped, dumped.get("resource")):
        if isinstance(holder, dict):
            for key in ("data", "blob"):
                if isinstance(holder.get(key), str):
                    holder[key] = f"<{len(holder[key])} base64 characters>"
    text = json.dumps(dumped, ensure_ascii=False)
    return text if len(text) <= MAX_PART else text[:MAX_PART] + "…"


def _describe(exc: BaseException) -> str:
    """An exception as one short line (the first leaf of an exception group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
