"""JSON response bodies (orjson) and the response headers browsers may read (CORS)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

# Response headers browser clients must be able to read (CORS expose list).
EXPOSED_HEADERS = [
    "X-Hermes-Session-Id",
    "X-Tether-Conversation",
    "X-Tether-Turn",
    "X-Tether-Epoch",
    "Retry-After",
    "Idempotent-Replayed",
    "ETag",
    "X-Request-Id",
]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")
