"""A stdio MCP server for tests/test_e2e_mcp_servers.py, written with the `mcp` SDK's MCPServer
(FastMCP in mcp 1.x): `python tests/mcp_servers/ledger.py`. Tools that answer, fail, sleep,
produce a large output, report the process id, or kill their own process mid-call."""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("ledger")


@server.tool()
def add(a: int, b: int) -> int:
    """The sum of two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """The text, as given."""
    return text


@server.tool()
def big(chars: int) -> str:
    """`chars` characters of output."""
    return "x" * chars


@server.tool()
async def sleep(seconds: float) -> str:
    """Answer "slept" after `seconds`."""
    await asyncio.sleep(seconds)
    return "slept"


@server.tool()
def crash() -> str:
    """Kill this server in the middle of the call."""
    print("ledger: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(1)


@server.tool()
def fail() -> str:
    """Always fails. (The SDK's ToolError: mcp 2.x sends the client the message of a ToolError
    only; any other exception, a ValueError say, reaches it as `Error executing tool fail`.)"""
    raise ToolError("ledger refused")


@server.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


if __name__ == "__main__":
    server.run()
