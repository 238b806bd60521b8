"""Every error leaves as the OpenAI envelope; a traceback never does."""

from __future__ import annotations

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tether.api.responses import json_response
from tether.errors import TetherError

log = structlog.get_logger("tether.api")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(error: TetherError, headers: dict[str, str] | None = None) -> Response:
    return json_response(error.body(), error.status, {**error.headers, **(headers or {})})


async def tether_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TetherError)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if exc.status_code != 404 else f"no route {request.url.path}"
    return error_response(TetherError(exc.status_code, code, str(message)), dict(exc.headers or {}))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("request.crashed", path=request.url.path)
    return error_response(
        TetherError(500, "internal_error", "internal error; the server log has the details")
    )
