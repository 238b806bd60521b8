"""Authentication, once per request, before routing: a plain ASGI middleware (no
`BaseHTTPMiddleware`: that one costs a task and a memory stream per request and gets in the way
of streaming responses). Every HTTP request not open by `is_open` is authenticated and counted
against its key's rate limit here, once; the tenant goes into the ASGI scope, where the routes
read it (`api.access.tenant_of`: no await, no store). It knows no route, so it gates whatever
is mounted behind it (an unknown path too: once keys exist, a request without a valid one gets
401 there, not 404). A WebSocket handshake is gated the same way (api/responses_ws.py): refused
before it is accepted, with the same status and body.

An error here (401, 429, a storage failure) is answered with the app's own exception handlers,
so it has the same OpenAI-style body, status and headers as one raised in a route.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.api.access import TENANT_KEY
from tether.api.auth import Authenticator
from tether.api.errors import error_of, error_response
from tether.errors import TetherError

# The open routes, all of them: no key needed, no rate limit taken.
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})
# The dashboard (tether/web/): its pages authenticate by their own session cookie, and a
# browser sends no Bearer key.
DASHBOARD = "/ui"


def is_open(scope: Scope, preflights: bool) -> bool:
    """Whether this request passes without a key: an open path, the dashboard (`/ui…`: it signs
    in by cookie itself), or (`preflights`: CORS is on) a CORS preflight, which browsers send
    without credentials. CORSMiddleware, outside this gate, answers those itself; this says so
    here too."""
    path: str = scope["path"]
    if path in OPEN_PATHS or path == DASHBOARD or path.startswith(DASHBOARD + "/"):
        return True
    return (
        preflights
        and scope["method"] == "OPTIONS"
        and "access-control-request-method" in Headers(scope=scope)
    )


class AuthGate:
    """The Authenticator is the app state's (made at start-up: it needs the opened store).
    `preflights`: whether CORS preflights are open (CORS is on)."""

    def __init__(self, app: ASGIApp, *, preflights: bool = False) -> None:
        self.app = app
        self.preflights = preflights

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or (
            kind == "http" and is_open(scope, self.preflights)
        ):
            await self.app(scope, receive, send)
            return
        auth: Authenticator = scope["app"].state.tether.auth
        try:
            scope[TENANT_KEY] = await auth.authenticate(_authorization(scope))
        except Exception as exc:
            await _answer_error(scope, receive, send, exc)
            return
        await self.app(scope, receive, send)


def _authorization(scope: Scope) -> str | None:
    """The Authorization header, read straight from the scope (no Headers object per request)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


async def deny_socket(scope: Scope, receive: Receive, send: Send, error: TetherError) -> None:
    """Refuse a WebSocket handshake: `error`'s status and envelope as the HTTP answer (ASGI's
    denial response), or a close (HTTP 403) under a server without that extension."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await error_response(error)(scope, receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008})


async def _answer_error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer `exc` with the handler the app has for it (the most specific class first); a
    WebSocket handshake with the error a client may be told (a bug: uvicorn's 500)."""
    if scope["type"] == "websocket":
        error = error_of(exc)
        if error is None:
            raise exc
        await deny_socket(scope, receive, send, error)
        return
    handlers: dict[Any, Any] = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
    raise exc
