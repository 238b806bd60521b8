"""The outermost layer of every HTTP request: its id and its metrics. The id is the client's
`X-Request-Id` when it is a plain token (1-128 of A-Z a-z 0-9 . _ : -), else one made here; it
is bound to the log context (every event logged while the request is answered, and by the turn
it starts, carries `request_id`) and returned in the answer's `X-Request-Id`. Each answer is
counted by route template, method and status, and timed to its last byte (tether/metrics.py)."""

from __future__ import annotations

import re
import secrets
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether import metrics

_TOKEN = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            if _TOKEN.fullmatch(value):
                return str(value.decode())
            break
    return secrets.token_hex(16)


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path is not None else "unmatched"


class Observe:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        header = (b"x-request-id", rid.encode())
        status = 500
        started = time.perf_counter()

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                await self.app(scope, receive, answer)
            finally:
                route, method = route_of(scope), scope["method"]
                metrics.REQUESTS.labels(route, method, str(status)).inc()
                elapsed = time.perf_counter() - started
                metrics.REQUEST_SECONDS.labels(route, method).observe(elapsed)
