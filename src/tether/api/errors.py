"""Every error leaves as the OpenAI envelope; a traceback never does."""

from __future__ import annotations

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tether.api.jsonbody import json_response
from tether.errors import TetherError
from tether.store.errors import ConflictError, StorageFull, StorageUnavailable, StoreError

log = structlog.get_logger("tether.api")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(error: TetherError, headers: dict[str, str] | None = None) -> Response:
    return json_response(error.body(), error.status, {**error.headers, **(headers or {})})


async def tether_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TetherError)
    return error_response(exc)


def error_of(exc: Exception) -> TetherError | None:
    """The client-facing error for an exception, or None if it is not one a client may be
    told (a bug: the caller answers 500). The one place storage failures become HTTP: a full
    disk 507 `insufficient_storage`; a database that cannot be used 503 `storage_unavailable`
    with Retry-After; a write that lost a race 409 `conversation_busy`."""
    if isinstance(exc, TetherError):
        return exc
    if isinstance(exc, StorageFull):
        return TetherError(507, "insufficient_storage", str(exc))
    if isinstance(exc, StorageUnavailable):
        retry = {"Retry-After": str(exc.retry_after)}
        return TetherError(503, "storage_unavailable", str(exc), headers=retry)
    if isinstance(exc, ConflictError):
        return TetherError(
            409,
            "conversation_busy",
            f"the conversation changed meanwhile: {exc}",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, StoreError):  # e.g. a schema newer than this build, met while serving
        return TetherError(503, "storage_unavailable", str(exc), headers={"Retry-After": "30"})
    return None


async def store_error(request: Request, exc: Exception) -> Response:
    error = error_of(exc)
    assert isinstance(exc, StoreError) and error is not None
    return error_response(error)


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
