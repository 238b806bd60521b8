"""A stdio MCP server with one instant tool, for bench/tools.py: `ping` answers `pong`."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("fast")


@server.tool()
def ping() -> str:
    """Answer at once."""
    return "pong"


if __name__ == "__main__":
    server.run()
