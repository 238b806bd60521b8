"""A Streamable HTTP MCP server for tests/test_e2e_mcp_servers.py, written with the `mcp` SDK's
MCPServer (FastMCP in mcp 1.x): `python tests/mcp_servers/docs_http.py PORT` serves
http://127.0.0.1:PORT/mcp. With DOCS_TOKEN set, a request without the header
`X-Docs-Token: <DOCS_TOKEN>` is answered 401 (so a test can see the client's headers sent)."""

from __future__ import annotations

import os
import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("docs", log_level="WARNING")


@server.tool()
def lookup(topic: str) -> str:
    """What the docs say on a topic."""
    return f"docs on {topic}"


@server.tool()
def add(a: int, b: int) -> int:
    """The sum of two integers."""
    return a + b


def token_gate(app: Any, token: str) -> Any:
    """`app`, answering 401 to an HTTP request without the token header."""

    async def gated(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"x-docs-token") != (
            token.encode()
        ):
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"token required"})
            return
        await app(scope, receive, send)

    return gated


if __name__ == "__main__":
    app: Any = server.streamable_http_app(streamable_http_path="/mcp")
    if token := os.environ.get("DOCS_TOKEN"):
        app = token_gate(app, token)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
