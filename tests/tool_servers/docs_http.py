"""A Streamable HTTP MCP server for the tests, written with the `mcp` SDK:
`python tests/tool_servers/docs_http.py PORT` serves http://127.0.0.1:PORT/mcp."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("docs")


@server.tool()
def lookup(topic: str) -> str:
    """What the docs say on a topic."""
    return f"docs on {topic}"


if __name__ == "__main__":
    server.run(
        "streamable-http", host="127.0.0.1", port=int(sys.argv[1]), streamable_http_path="/mcp"
    )
