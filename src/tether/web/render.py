"""Pages out of templates: the Jinja environment (autoescaped, async), its filters, the
headers every page carries, and the two ways a page leaves: rendered whole, or streamed as it
renders (a long transcript's first bytes leave before its last message is read)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from tether.web.session import Session, base_of

log = structlog.get_logger("tether.web")

HERE = Path(__file__).resolve().parent
FLUSH = "<!--flush-->"  # a template's `{{ flush }}`: send what is rendered so far
CHUNK = 32 * 1024  # otherwise a streamed page leaves in pieces of about this size
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PageError(Exception):
    """A dashboard refusal shown as a page (403 for a form without its CSRF token, 400 for a
    bad field): its own, not an API error code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def when(ts: float | None) -> str:
    """A unix time as `2025-01-31 13:45:07 UTC` (empty for none)."""
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def highlight(snippet: str, spans: list[tuple[int, int]] | list[list[int]]) -> Markup:
    """The snippet, escaped, with each [start, end) span marked; overlapping or out-of-range
    spans are merged and clipped, never trusted."""
    merged: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in spans):
        start, end = max(0, start), min(len(snippet), end)
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, at = [], 0
    for start, end in merged:
        out.append(escape(snippet[at:start]))
        out.append(Markup("<mark>%s</mark>") % snippet[start:end])
        at = end
    out.append(escape(snippet[at:]))
    return Markup("").join(out)


def percent(part: float | None, whole: float | None) -> float:
    """part/whole as a percentage for a bar, within 0..100."""
    if not part or not whole:
        return 0.0
    return round(max(0.0, min(100.0, 100.0 * part / whole)), 1)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        enable_async=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
    )
    env.filters.update(when=when, seconds=seconds, highlight=highlight, q=lambda s: quote(s, ""))
    env.globals.update(percent=percent, flush=Markup(FLUSH))
    return env


ENV = _environment()


def context(request: Request, session: Session | None, **values: Any) -> dict[str, Any]:
    return {"base": base_of(request), "session": session, "page_error": None, **values}


def headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**SECURITY_HEADERS, **(extra or {})}


async def page(
    request: Request,
    session: Session | None,
    template: str,
    status: int = 200,
    **values: Any,
) -> Response:
    """A page rendered whole (short pages: sign-in, errors, confirmations)."""
    text = await ENV.get_template(template).render_async(context(request, session, **values))
    return HTMLResponse(text.replace(FLUSH, ""), status, headers=headers())


def stream(
    request: Request, session: Session | None, template: str, **values: Any
) -> StreamingResponse:
    """A page streamed as it renders: the head leaves at once, then about CHUNK at a time (and
    at each `{{ flush }}`). Awaitables and async iterators passed in are awaited by the
    template as it reaches them. A failure half-way cannot change the status any more: the
    page ends with a note instead, and the log says what happened."""
    body = ENV.get_template(template).generate_async(context(request, session, **values))
    return StreamingResponse(
        _chunks(body, template), 200, headers=headers(), media_type="text/html; charset=utf-8"
    )


async def _chunks(body: AsyncIterator[str], template: str) -> AsyncIterator[str]:
    parts: list[str] = []
    size = 0
    try:
        async for piece in body:
            if piece == FLUSH:
                if parts:
                    yield "".join(parts)
                parts, size = [], 0
                continue
            parts.append(piece)
            size += len(piece)
            if size >= CHUNK:
                yield "".join(parts)
                parts, size = [], 0
    except Exception as exc:
        log.exception("web.page_failed", template=template)
        message = getattr(exc, "message", None) or "the page could not be finished"
        parts.append(str(Markup('<p class="error">%s</p>') % message))
    if parts:
        yield "".join(parts)
