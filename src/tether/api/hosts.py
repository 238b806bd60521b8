"""DNS-rebinding protection: a server listening on a loopback address answers only requests
addressed to a loopback name. A web page on evil.example whose name an attacker re-points at
127.0.0.1 reaches the port, but its requests still say `Host: evil.example`; they get
421 `misdirected_request` (the OpenAI error envelope) before any route, CORS included, runs.

A plain ASGI middleware: one header scan per request, nothing else.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.config import Settings
from tether.errors import TetherError

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})


def host_name(value: str) -> str:
    """The name in a Host header (or a configured host): lower case, without port, brackets
    or a trailing dot. `[::1]:8080` → `::1`, `LocalHost.:80` → `localhost`."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The Host names this server answers, or None for any. Loopback-bound: the loopback names,
    the listen address and `allowed_hosts`. Bound elsewhere: any, unless `allowed_hosts` is set
    (then those and the loopback names). `*` in `allowed_hosts` turns the check off."""
    extra = {host_name(h) for h in settings.allowed_hosts}
    if "*" in extra or (not extra and not settings.loopback_only):
        return None
    names = LOOPBACK_NAMES | extra
    if host_name(settings.host) not in _ANY_ADDRESS:
        names |= {host_name(settings.host)}
    return frozenset(names)


class HostGuard:
    """Answer 421 to HTTP requests whose Host header names a host not in `allowed`. A request
    without a Host header (HTTP/1.0) passes: browsers always send one."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed is not None and scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"host" and host_name(value.decode("latin-1")) not in self.allowed:
                    await _refuse(send, value.decode("latin-1"))
                    return
        await self.app(scope, receive, send)


async def _refuse(send: Send, host: str) -> None:
    error = TetherError(
        421,
        "misdirected_request",
        f"this server does not answer for host {host[:100]!r} (DNS-rebinding protection); "
        "use localhost or 127.0.0.1, or have the operator add the name to TETHER_ALLOWED_HOSTS",
        param="host",
        type="invalid_request_error",
    )
    body = orjson.dumps(error.body())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 421, "headers": headers})
    await send({"type": "http.response.body", "body": body})
