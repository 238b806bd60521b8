"""What the dashboard does: sign in and out, rename, fork, delete (after a confirmation page),
export. Each change is a POST form whose CSRF token routes.py has already checked; each ends in
a redirect (303), so a reload never repeats it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tether.engine import conversations
from tether.engine import export as exporting
from tether.keys import hash_key
from tether.web.render import PageError, headers, page
from tether.web.session import (
    ANONYMOUS_LIFETIME,
    LIFETIME,
    Session,
    anonymous,
    base_of,
    current,
    engine_of,
    set_cookie,
    sign_out,
    signed_in,
    signer_of,
)

MAX_KEY = 512  # longer than any key Tether makes; a sign-in form field past this is refused
MAX_TITLE = 300


def conv_url(request: Request, conversation_id: str) -> str:
    return f"{base_of(request)}/c/{quote(conversation_id, '')}"


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303, headers=headers())


def safe_next(request: Request, target: str | None) -> str:
    """Where to go after signing in: a dashboard path of this server only (no open redirect)."""
    base = base_of(request)
    if target and target.startswith(base + "/") and "//" not in target and "\\" not in target:
        return target
    return base + "/"


async def login_form(request: Request) -> Response:
    """The sign-in page; straight to the list when signed in already, or in open mode."""
    if await current(request) is not None:
        return see_other(safe_next(request, request.query_params.get("next")))
    claims, cookie = anonymous(request)
    csrf = signer_of(request).csrf(claims.sid)
    response = await page(
        request, None, "login.html", csrf=csrf, next=request.query_params.get("next", "")
    )
    if cookie is not None:
        set_cookie(request, response, cookie, ANONYMOUS_LIFETIME)
    return response


async def login(request: Request, form: Mapping[str, str]) -> Response:
    """A valid key starts a new session (a fresh sid) and goes on; any other gets the form
    again, 401. The form's CSRF token hangs on the anonymous session its page set."""
    claims, _ = anonymous(request)
    signer = signer_of(request)
    if not signer.check_csrf(claims.sid, form.get("csrf")):
        raise PageError(403, "the sign-in form expired or came from elsewhere: load it again")
    key = form.get("key", "").strip()
    store = engine_of(request).store
    tenant = await store.tenant_for_key(hash_key(key)) if 0 < len(key) <= MAX_KEY else None
    if tenant is None:
        response = await page(
            request,
            None,
            "login.html",
            401,
            csrf=signer.csrf(claims.sid),
            next=form.get("next", ""),
            error="That key is not valid (or it was revoked).",
        )
        return response
    response = see_other(safe_next(request, form.get("next")))
    set_cookie(request, response, signed_in(request, hash_key(key), tenant), LIFETIME)
    return response


async def logout(request: Request, session: Session, form: Mapping[str, str]) -> Response:
    response = see_other(f"{base_of(request)}/login")
    sign_out(request, response)
    return response


async def rename(request: Request, session: Session, form: Mapping[str, str]) -> Response:
    engine = engine_of(request)
    conv = await conversations.get(engine, session.tenant, request.path_params["conversation_id"])
    title = " ".join(form.get("title", "").split())
    if len(title) > MAX_TITLE:
        raise PageError(400, f"a title is at most {MAX_TITLE} characters")
    if title:
        conv = await conversations.update(engine, conv, title=title)
    else:
        conv = await conversations.update(engine, conv, clear_title=True)
    return see_other(conv_url(request, conv.id))


async def fork(request: Request, session: Session, form: Mapping[str, str]) -> Response:
    engine = engine_of(request)
    conv = await conversations.get(engine, session.tenant, request.path_params["conversation_id"])
    at = form.get("at_seq", "").strip()
    if not re.fullmatch(r"[0-9]{1,18}", at) or not 1 <= int(at) <= conv.last_seq:
        raise PageError(400, f"fork at a message seq from 1 to {conv.last_seq}, not {at!r}")
    new = await conversations.fork(engine, conv, int(at))
    return see_other(conv_url(request, new.id))


async def confirm_delete(request: Request, session: Session, form: Mapping[str, str]) -> Response:
    """The confirmation step: what deleting takes with it, and the form that does it."""
    engine = engine_of(request)
    conv = await conversations.get(engine, session.tenant, request.path_params["conversation_id"])
    return await page(request, session, "delete.html", conv=conv)


async def delete(request: Request, session: Session, form: Mapping[str, str]) -> Response:
    engine = engine_of(request)
    conv = await conversations.get(engine, session.tenant, request.path_params["conversation_id"])
    await conversations.delete(engine, conv)
    return see_other(f"{base_of(request)}/?deleted={quote(conv.id, '')}")


async def export(request: Request, session: Session, form: Mapping[str, str]) -> Response:
    """The whole transcript as a download: `?format=json` (re-imports with `tether
    conversations import`) or `?format=markdown`."""
    engine = engine_of(request)
    conv = await conversations.get(engine, session.tenant, request.path_params["conversation_id"])
    kind = request.query_params.get("format", "json")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", conv.id)[:100] or "conversation"
    if kind == "json":
        body = orjson.dumps(await exporting.export_json(engine, conv), option=orjson.OPT_INDENT_2)
        media, suffix = "application/json", "json"
    elif kind == "markdown":
        body = (await exporting.export_markdown(engine, conv)).encode()
        media, suffix = "text/markdown; charset=utf-8", "md"
    else:
        raise PageError(400, f"format is json or markdown, not {kind!r}")
    disposition = f'attachment; filename="{name}.{suffix}"'
    return Response(
        body, 200, headers=headers({"Content-Disposition": disposition}), media_type=media
    )
