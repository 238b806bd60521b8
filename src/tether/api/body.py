"""Reading a request body: content type, size limit (also for chunked bodies), JSON."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from tether.errors import TetherError


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise TetherError(
            415,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json' "
            f"(got {ctype or 'none'!r})",
        )
    too_big = TetherError(
        413, "request_too_large", f"the request body is larger than {limit} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_big
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_big
        parts.append(part)
    try:
        data = orjson.loads(b"".join(parts))
    except orjson.JSONDecodeError as exc:
        raise TetherError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TetherError(
            400, "invalid_request", f"the body must be a JSON object, not {type(data).__name__}"
        )
    return data
