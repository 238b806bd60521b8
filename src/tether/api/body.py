"""Reading a request body: content type, size limit (also for chunked bodies), JSON, nesting.

The nesting limit (MAX_DEPTH arrays and objects, the body itself included) is checked at parse
time, so nothing accepted can fail to serialise later: orjson writes at most 255 levels, and a
body nested 256 deep once crashed its turn (a 500, after 17 s of logging on the event loop).
Deep enough for real tool schemas (a JSON Schema nests two levels per property level).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from tether.errors import TetherError

MAX_DEPTH = 64
ORJSON_DEPTH = 254  # orjson.dumps raises past this many levels


def _too_deep(value: Any, limit: int) -> bool:
    """Whether arrays/objects nest more than `limit` levels (iterative: no recursion limit)."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _deep_path(value: Any, limit: int) -> str:
    """Where the nesting first goes past `limit`: `messages[0].extra.a[3]…` (at most 12 steps)."""
    steps: list[str] = []
    node = value
    for depth in range(limit):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(child, dict | list) and _too_deep(child, limit - depth - 1):
                if len(steps) < 12:
                    steps.append(f".{key}" if isinstance(node, dict) else f"[{key}]")
                node = child
                break
    path = "".join(steps).lstrip(".")
    return path + ("…" if limit > 12 else "")


def check_depth(
    data: Any,
    body: bytes | None = None,
    limit: int = MAX_DEPTH,
    at: str = "",
    skip: str | None = None,
) -> None:
    """400 `invalid_request` (param: where) if `data` nests more than `limit` levels. Cheap
    for most bodies: fewer brackets than the limit cannot nest deeper. `at`: where `data` sits
    in the body (`messages[3]`). `skip`: a top-level list whose items the caller checks one by
    one where it uses them (a full-history request's resent messages are never used: checking
    them cost 40 µs a turn at 200 messages)."""
    if skip is not None and isinstance(data, dict) and isinstance(data.get(skip), list):
        data = {k: v for k, v in data.items() if k != skip}
        try:  # the rest: a few parameters, counted as the body was
            body = orjson.dumps(data) if body is not None else None
        except orjson.JSONEncodeError:  # too deep to write at all: the check below says where
            body = None
    if body is not None and body.count(b"[") + body.count(b"{") <= limit:
        return
    # orjson writes up to ORJSON_DEPTH levels: `data` under (ORJSON_DEPTH - limit) more lists
    # serialises iff it nests `limit` levels at most — one pass in C (0.5 ms for 4,096
    # messages, against 5-15 ms walking them in Python)
    wrapped: Any = data
    for _ in range(ORJSON_DEPTH - limit):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
        return
    except orjson.JSONEncodeError:
        if not _too_deep(data, limit):  # failed for another reason: not ours to judge here
            return
    inner = _deep_path(data, limit)
    where = f"{at}.{inner}" if at and inner and not inner.startswith("[") else at + inner
    depth = MAX_DEPTH if at else limit
    raise TetherError(
        400,
        "invalid_request",
        f"the body nests arrays and objects more than {depth} levels deep (at {where})",
        param=where.split(".", 1)[0].split("[", 1)[0] or None,
    )


async def read_json_object(
    request: Request, limit: int, checked_later: str | None = None
) -> dict[str, Any]:
    """The body as a JSON object. `checked_later`: a top-level list whose items' nesting the
    caller checks as it uses them (`check_depth`'s `skip`)."""
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
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise too_big
            parts.append(part)
    except ClientDisconnect:  # gone (or closed by the server: too slow, or to make room)
        raise TetherError(400, "client_disconnected", "the client left mid-body") from None
    body = b"".join(parts)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise TetherError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TetherError(
            400, "invalid_request", f"the body must be a JSON object, not {type(data).__name__}"
        )
    check_depth(data, body, skip=checked_later)
    return data
