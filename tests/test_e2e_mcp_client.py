"""The MCP client alone (`tether.tools.mcp_client.McpServer`) against real MCP servers written
with the `mcp` SDK: a stdio child process (tests/tool_servers/ledger.py) and a Streamable HTTP
server (tests/tool_servers/docs_http.py) in its own process."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import docs_http
from tether.config_tools import McpServerConfig
from tether.testing.processes import stop
from tether.tools.base import ToolSpec
from tether.tools.mcp_client import McpServer, ToolError

HERE = Path(__file__).parent / "tool_servers"
LEDGER = [sys.executable, str(HERE / "ledger.py")]


async def until(check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def spec(server: McpServer, name: str) -> ToolSpec:
    return next(s for s in server.tools() if s.remote_name == name)


async def test_a_stdio_server_offers_its_tools_and_answers() -> None:
    server = McpServer(McpServerConfig(name="ledger", command=LEDGER, approval=["add"], timeout=5))
    await server.start()
    try:
        await until(server.up)
        names = {s.name for s in server.tools()}
        assert {"mcp__ledger__add", "mcp__ledger__echo", "mcp__ledger__crash"} <= names
        add = spec(server, "add")
        assert add.source == "mcp:ledger" and add.approval and add.timeout == 5
        assert add.parameters["required"] == ["a", "b"]
        assert not spec(server, "echo").approval
        out = await server.call(add, {"a": 2, "b": 3})
        assert (out.text, out.error) == ("5", False)
        failed = await server.call(spec(server, "fail"), {})
        assert failed.error and "ledger refused" in failed.text
    finally:
        await server.close()
    assert not server.up() and server.tools() == []


async def test_the_allow_list_narrows_what_a_server_offers() -> None:
    server = McpServer(McpServerConfig(name="ledger", command=LEDGER, tools=["add", "pid"]))
    await server.start()
    try:
        await until(server.up)
        assert sorted(s.name for s in server.tools()) == ["mcp__ledger__add", "mcp__ledger__pid"]
    finally:
        await server.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_server_that_dies_mid_call_fails_the_call_at_once_and_comes_back() -> None:
    server = McpServer(McpServerConfig(name="ledger", command=LEDGER, timeout=60))
    await server.start()
    try:
        await until(server.up)
        pid_spec = spec(server, "pid")
        before = int((await server.call(pid_spec, {})).text)
        started = time.monotonic()
        with pytest.raises(ToolError, match="went down during the call"):
            await server.call(spec(server, "crash"), {})
        assert time.monotonic() - started < 5  # not the 60 s timeout
        await until(lambda: not alive(before), 5)  # the child is gone (on a busy machine: soon)
        await until(server.up)  # restarted (backoff 0.5 s first)
        after = int((await server.call(spec(server, "pid"), {})).text)
        assert after != before
    finally:
        await server.close()
    with pytest.raises(ProcessLookupError):
        os.kill(after, 0)  # close() leaves no child behind


async def test_a_server_that_cannot_start_is_down_and_never_raises() -> None:
    server = McpServer(McpServerConfig(name="ghost", command=["/nonexistent/mcp-server"]))
    await server.start()
    await asyncio.sleep(1.5)  # two attempts at least
    assert not server.up() and server.tools() == []
    fake = ToolSpec(name="mcp__ghost__x", description="", source="mcp:ghost", remote_name="x")
    with pytest.raises(ToolError, match="is down"):
        await server.call(fake, {})
    await server.close()


@pytest.fixture
def docs_url() -> Iterator[str]:
    proc, url = docs_http()
    yield url
    stop(proc)


async def test_a_streamable_http_server_answers(docs_url: str) -> None:
    server = McpServer(McpServerConfig(name="docs", url=docs_url))
    await server.start()
    try:
        await until(server.up)
        assert [s.name for s in server.tools()] == ["mcp__docs__lookup"]
        out = await server.call(spec(server, "lookup"), {"topic": "compaction"})
        assert out.text == "docs on compaction"
    finally:
        await server.close()
