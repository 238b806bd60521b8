"""The dashboard's route table (mounted at `/ui` by api/app.py) and what every page goes
through first: the session (no valid one: to the sign-in page), the CSRF token of a POST form,
and errors shown as a page with their status — never a traceback, never the API's JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl, quote

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tether.errors import TetherError
from tether.web import actions, views
from tether.web.render import HERE, PageError, headers, page
from tether.web.session import (
    ANONYMOUS_LIFETIME,
    Session,
    base_of,
    current,
    engine_of,
    set_cookie,
    signer_of,
)

log = structlog.get_logger("tether.web")

MAX_FORM = 64 * 1024  # bytes: a dashboard form is a few fields
FORM_TYPE = "application/x-www-form-urlencoded"

View = Callable[[Request, Session, Mapping[str, str]], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


async def read_form(request: Request) -> dict[str, str]:
    """A POST's urlencoded form (the only kind the dashboard's forms send), at most MAX_FORM."""
    if request.headers.get("content-type", "").split(";")[0].strip() != FORM_TYPE:
        return {}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise PageError(413, "that form is too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def error_page(request: Request, session: Session | None, exc: Exception) -> Response:
    """An exception as a page: a dashboard refusal or a TetherError with its own status and
    message; a storage failure as the API would tell it; anything else a 500 (logged)."""
    if not isinstance(exc, PageError | TetherError):
        told = engine_of(request).deps.errors(exc)
        if told is None:
            log.exception("web.failed", path=request.url.path)
            exc = PageError(500, "something went wrong on the server (the log says what)")
        else:
            exc = told
    status = exc.status
    return await page(request, session, "error.html", status, code=status, message=exc.message)


def guarded(view: View) -> Endpoint:
    """A page that needs a session; a POST's form must carry its CSRF token (else 403)."""

    async def endpoint(request: Request) -> Response:
        session = None
        try:
            session = await current(request)
            if session is None:
                return to_login(request)
            form: dict[str, str] = {}
            if request.method == "POST":
                form = await read_form(request)
                if not signer_of(request).check_csrf(session.sid, form.get("csrf")):
                    raise PageError(403, "this form's CSRF token is missing or wrong: reload")
            response = await view(request, session, form)
        except Exception as exc:
            response = await error_page(request, session, exc)
        if session is not None and session.cookie is not None:
            set_cookie(request, response, session.cookie, ANONYMOUS_LIFETIME)
        return response

    return endpoint


def to_login(request: Request) -> Response:
    """303 to the sign-in page, which comes back here (for a GET) once signed in."""
    url = f"{base_of(request)}/login"
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        url += "?next=" + quote(target, "")
    return RedirectResponse(url, 303, headers=headers())


async def login_page(request: Request) -> Response:
    try:
        if request.method == "POST":
            return await actions.login(request, await read_form(request))
        return await actions.login_form(request)
    except Exception as exc:
        return await error_page(request, None, exc)


async def not_found(request: Request) -> Response:
    """Any other path under /ui: a page, not the API's JSON."""
    return await page(
        request, None, "error.html", 404, code=404, message="there is no such dashboard page"
    )


routes: list[BaseRoute] = [
    Route("/", guarded(views.home), methods=["GET"]),
    Route("/login", login_page, methods=["GET", "POST"]),
    Route("/logout", guarded(actions.logout), methods=["POST"]),
    Route("/c/{conversation_id}", guarded(views.conversation), methods=["GET"]),
    Route("/c/{conversation_id}/rename", guarded(actions.rename), methods=["POST"]),
    Route("/c/{conversation_id}/fork", guarded(actions.fork), methods=["POST"]),
    Route("/c/{conversation_id}/delete", guarded(actions.confirm_delete), methods=["GET"]),
    Route("/c/{conversation_id}/delete", guarded(actions.delete), methods=["POST"]),
    Route("/c/{conversation_id}/export", guarded(actions.export), methods=["GET"]),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    Route("/{rest:path}", not_found),
]
