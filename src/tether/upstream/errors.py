"""An OpenAI-compatible server's error answer (status and body) as the `TetherError` our client
sees: one mapping for every `Upstream` that speaks HTTP, and for the fakes that stand in for
one."""

from __future__ import annotations

import orjson

from tether.errors import TetherError


def map_status_error(status: int, body: bytes, retry_after: float | None) -> TetherError:
    """Turn an upstream HTTP error into the error our client sees."""
    message = body[:500].decode("utf-8", "replace")
    code: str | None = None
    param: str | None = None
    try:
        err = orjson.loads(body).get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code = err.get("code") if isinstance(err.get("code"), str) else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if code == "context_length_exceeded" or "maximum context length" in message:
        return TetherError(400, "context_length_exceeded", f"upstream: {message}", param="messages")
    if status == 429:
        headers = {"Retry-After": str(int(retry_after or 1))}
        return TetherError(
            429, "upstream_rate_limited", f"upstream rate limit: {message}", headers=headers
        )
    if status in (400, 404, 422):
        return TetherError(
            status, code or "upstream_invalid_request", f"upstream: {message}", param=param
        )
    if status in (401, 403):
        return TetherError(
            502,
            "upstream_auth_failed",
            f"the upstream rejected Tether's credentials ({status}): check TETHER_UPSTREAM_API_KEY",
        )
    return TetherError(502, "upstream_error", f"upstream answered {status}: {message}")
