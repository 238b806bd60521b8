"""`tether.tools.mcp.McpServer` against real MCP servers written with the `mcp` SDK: a stdio child
(tests/mcp_servers/ledger.py) and a Streamable HTTP server in its own process
(tests/mcp_servers/docs_http.py). No mocks."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tether.config import McpServerConfig
from tether.tools.base import ToolSpec
from tether.tools.mcp import McpServer, ToolError, visible_name

SERVERS = Path(__file__).parent / "mcp_servers"
LEDGER = [sys.executable, str(SERVERS / "ledger.py")]
TOKEN = "s3cret-docs-token"


async def until(check: Callable[[], bool], timeout: float = 15.0) -> float:
    """Wait for `check()`; returns the seconds it took."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"not within {timeout} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


def spec(server: McpServer, tool: str) -> ToolSpec:
    return next(s for s in server.tools() if s.remote_name == tool)


def gone(pid: int) -> bool:
    """The process has exited and been reaped (no zombie left)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "X"  # dead; "Z" is a zombie nobody reaped


async def started(config: McpServerConfig) -> McpServer:
    server = McpServer(config)
    began = time.monotonic()
    await server.start()
    assert time.monotonic() - began < 0.2  # start() only launches the supervisor
    await until(server.up)
    return server


async def pid_of(server: McpServer) -> int:
    return int((await server.call(spec(server, "pid"), {})).text)


async def test_a_stdio_server_lists_its_tools_and_answers() -> None:
    server = await started(McpServerConfig(name="ledger", command=LEDGER, timeout=7))
    try:
        names = {s.name for s in server.tools()}
        expected = {"add", "echo", "big", "sleep", "crash", "fail", "pid"}
        assert names == {visible_name("ledger", t) for t in expected}
        add = spec(server, "add")
        assert add.name == "mcp__ledger__add" and add.remote_name == "add"
        assert add.source == "mcp:ledger" and add.timeout == 7 and not add.approval
        assert add.description == "The sum of two integers."
        assert add.parameters["type"] == "object"
        assert set(add.parameters["properties"]) == {"a", "b"}
        assert add.parameters["required"] == ["a", "b"]
        assert add.openai()["function"]["name"] == "mcp__ledger__add"
        out = await server.call(add, {"a": 2, "b": 3})
        assert (out.text, out.error) == ("5", False)
        assert (await server.call(spec(server, "echo"), {"text": "héllo"})).text == "héllo"
        big = await server.call(spec(server, "big"), {"chars": 200_000})
        assert big.text == "x" * 200_000
    finally:
        await server.close()


async def test_b_the_allow_list_and_approval_list_shape_the_specs() -> None:
    config = McpServerConfig(name="ledger", command=LEDGER, tools=["add", "echo"], approval=["add"])
    server = await started(config)
    try:
        specs = {s.remote_name: s for s in server.tools()}
        assert set(specs) == {"add", "echo"}
        assert specs["add"].approval and not specs["echo"].approval
    finally:
        await server.close()


async def test_c_d_a_failing_tool_is_an_error_output_and_a_slow_one_times_out() -> None:
    server = await started(McpServerConfig(name="ledger", command=LEDGER))
    try:
        failed = await server.call(spec(server, "fail"), {})
        assert failed.error and "ledger refused" in failed.text
        sleep = dataclasses.replace(spec(server, "sleep"), timeout=0.5)
        began = time.monotonic()
        with pytest.raises(ToolError, match=r"timed out after 0\.5 s"):
            await server.call(sleep, {"seconds": 5})
        assert time.monotonic() - began < 1.5
        assert server.up()  # a timeout is the call's, not the server's
        assert (await server.call(spec(server, "add"), {"a": 1, "b": 1})).text == "2"
    finally:
        await server.close()


async def test_e_a_server_dying_mid_call_fails_the_call_at_once_and_restarts() -> None:
    with capture_logs() as logs:
        server = await started(McpServerConfig(name="ledger", command=LEDGER))
        try:
            before = await pid_of(server)
            began = time.monotonic()
            with pytest.raises(ToolError, match="went down during the call"):
                await server.call(spec(server, "crash"), {})
            failed_in = time.monotonic() - began
            assert failed_in < 5
            down_in = await until(lambda: not server.up(), 5)
            back_in = await until(server.up, 10)
            after = await pid_of(server)
            assert after != before and gone(before)
            print(f"crash: failed in {failed_in:.3f} s, down +{down_in:.3f}, up +{back_in:.2f}")
        finally:
            await server.close()
    events = [(e["event"], e.get("line")) for e in logs]
    assert ("mcp.stderr", "ledger: crashing on purpose") in events
    assert [e for e, _ in events].count("mcp.up") == 2
    assert any(e["event"] == "mcp.down" and e["server"] == "ledger" for e in logs)


async def test_f_a_command_that_does_not_exist_is_down_and_retried_not_raised() -> None:
    with capture_logs() as logs:
        server = McpServer(McpServerConfig(name="ghost", command=["/nonexistent/cmd"]))
        await server.start()
        await asyncio.sleep(1.0)
        assert not server.up() and server.tools() == []
        with pytest.raises(ToolError, match="'ghost' is down"):
            await server.call(
                ToolSpec(name="mcp__ghost__x", description="", source="mcp:ghost", remote_name="x"),
                {},
            )
        await server.close()
        await server.close()
    failures = [e for e in logs if e["event"] == "mcp.start_failed"]
    assert len(failures) >= 2  # retried with backoff (0.5 s, then 1 s)
    assert "FileNotFoundError" in failures[0]["reason"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def docs_server() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {**os.environ, "DOCS_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, str(SERVERS / "docs_http.py"), str(port)], env=env)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "docs server not up"
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield proc, f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait()


async def test_g_a_streamable_http_server_answers_with_the_headers_then_goes_down(
    docs_server: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, url = docs_server
    refused = McpServer(McpServerConfig(name="nodocs", url=url))
    await refused.start()
    config = McpServerConfig(name="docs", url=url, headers={"X-Docs-Token": TOKEN})
    server = await started(config)
    try:
        assert {s.name for s in server.tools()} == {"mcp__docs__lookup", "mcp__docs__add"}
        lookup = spec(server, "lookup")
        out = await server.call(lookup, {"topic": "tools"})
        assert (out.text, out.error) == ("docs on tools", False)
        assert not refused.up()  # the server answers 401 without the header
        proc.kill()
        proc.wait()
        down_in = await until(lambda: not server.up(), 8)
        print(f"http: down {down_in:.2f} s after the kill")
        with pytest.raises(ToolError, match="down"):
            await server.call(lookup, {"topic": "x"})
    finally:
        await server.close()
        await refused.close()


async def test_h_close_leaves_no_child_process() -> None:
    server = await started(McpServerConfig(name="ledger", command=LEDGER))
    pid = await pid_of(server)
    assert not gone(pid)
    await server.close()
    assert gone(pid)
    assert not server.up() and server.tools() == []
    await server.close()  # idempotent
    leftover: list[Any] = [
        t for t in asyncio.all_tasks() if t.get_name().startswith("mcp-") and not t.done()
    ]
    assert leftover == []
