"""Who a dashboard request is: the signed session cookie, the CSRF token derived from it, and
the check, on every request, that the key it was signed in with is still valid.

The cookie holds `{sid, key hash, tenant, expiry}` as base64url JSON, then `.` and its
HMAC-SHA256 under `settings.ui_secret` (or a random secret made once per process: a restart
signs everyone out). It is HttpOnly, SameSite=Lax, Path=/ui (the dashboard's mount), Secure on
https. A cookie with no key hash is an anonymous session: the sign-in form's CSRF token hangs on
it, and in open mode (a store that never had an API key) it is the `default` tenant's session.
Every POST form carries `csrf` = HMAC(secret, "csrf:" + sid), checked by `check_csrf`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import cast

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tether.engine.service import Engine
from tether.keys import OPEN_TENANT

COOKIE = "tether_ui"
LIFETIME = 12 * 3600.0  # a signed-in session lasts this long (seconds), then signs in again
ANONYMOUS_LIFETIME = 3600.0  # an anonymous (sign-in form) session
STATE_ATTR = "tether_web_signer"  # on app.state: the process's Signer
MAX_ENDED = 10_000  # signed-out sessions remembered before the expired ones are dropped


@dataclass(frozen=True, slots=True)
class Claims:
    """What the cookie says. `key_hash` "" is an anonymous session (not signed in)."""

    sid: str
    key_hash: str
    tenant: str
    expires: float


@dataclass(frozen=True, slots=True)
class Session:
    """A request's dashboard session: whose conversations it sees, its CSRF token. `cookie`:
    a cookie value to set with the response (an anonymous session made by this request)."""

    sid: str
    tenant: str
    open_mode: bool
    csrf: str
    cookie: str | None = None


class Signer:
    """Signs and reads cookies; remembers the sessions signed out here until they expire
    (in this process: a restart with a fixed `ui_secret`, or another replica, forgets them)."""

    def __init__(self, secret: str | None) -> None:
        self._key = (secret or secrets.token_urlsafe(32)).encode()
        self._ended: dict[str, float] = {}  # sid -> its expiry

    def end(self, claims: Claims) -> None:
        now = time.time()
        if len(self._ended) >= MAX_ENDED:
            self._ended = {sid: exp for sid, exp in self._ended.items() if exp > now}
        self._ended[claims.sid] = claims.expires

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def sign(self, claims: Claims) -> str:
        body = orjson.dumps([claims.sid, claims.key_hash, claims.tenant, claims.expires])
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def read(self, value: str | None) -> Claims | None:
        """The claims of a cookie signed here and not expired; None for anything else."""
        if not value or value.count(".") != 1:
            return None
        body_text, mac_text = value.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            sid, key_hash, tenant, expires = orjson.loads(body)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (sid, key_hash, tenant)):
            return None
        if not isinstance(expires, int | float) or expires <= time.time():
            return None
        if sid in self._ended:
            return None
        return Claims(sid, key_hash, tenant, float(expires))

    def csrf(self, sid: str) -> str:
        return _b64(self._mac(b"csrf:" + sid.encode()))

    def check_csrf(self, sid: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf(sid).encode(), (token or "").encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def engine_of(request: Request) -> Engine:
    return cast(Engine, request.app.state.tether.engine)


def signer_of(request: Request) -> Signer:
    """The app's Signer, made at its first dashboard request (the secret lives in memory)."""
    signer = getattr(request.app.state, STATE_ATTR, None)
    if signer is None:
        signer = Signer(engine_of(request).settings.ui_secret)
        setattr(request.app.state, STATE_ATTR, signer)
    return cast(Signer, signer)


def new_sid() -> str:
    return secrets.token_urlsafe(18)


def anonymous(request: Request) -> tuple[Claims, str | None]:
    """The request's anonymous session (the sign-in form's), and a cookie value to set when
    this request had none (or an expired one)."""
    signer = signer_of(request)
    claims = signer.read(request.cookies.get(COOKIE))
    if claims is not None and not claims.key_hash:
        return claims, None
    claims = Claims(new_sid(), "", "", time.time() + ANONYMOUS_LIFETIME)
    return claims, signer.sign(claims)


async def current(request: Request) -> Session | None:
    """The request's session, or None: no cookie, a bad or expired one, or its key revoked
    (checked on every request). In open mode every browser is the `default` tenant."""
    signer = signer_of(request)
    store = engine_of(request).store
    claims = signer.read(request.cookies.get(COOKIE))
    if claims is not None and claims.key_hash:
        tenant = await store.tenant_for_key(claims.key_hash)
        if tenant is None or tenant != claims.tenant:
            return None
        return Session(claims.sid, tenant, False, signer.csrf(claims.sid))
    if await store.count_api_keys() != 0:
        return None
    claims, cookie = anonymous(request)
    return Session(claims.sid, OPEN_TENANT, True, signer.csrf(claims.sid), cookie)


def signed_in(request: Request, key_hash: str, tenant: str) -> str:
    """A new session's cookie value (a new sid: nothing of the anonymous one carries over)."""
    claims = Claims(new_sid(), key_hash, tenant, time.time() + LIFETIME)
    return signer_of(request).sign(claims)


def set_cookie(request: Request, response: Response, value: str, max_age: float) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(max_age),
        path=cookie_path(request),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def sign_out(request: Request, response: Response) -> None:
    """End the request's session here (its cookie, replayed, is refused) and clear it."""
    signer = signer_of(request)
    claims = signer.read(request.cookies.get(COOKIE))
    if claims is not None:
        signer.end(claims)
    clear_cookie(request, response)


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE,
        path=cookie_path(request),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def cookie_path(request: Request) -> str:
    """The dashboard's own path (`/ui`, under any root path the app is served at)."""
    return base_of(request)


def base_of(request: Request) -> str:
    """Where the dashboard is mounted: every link it makes starts here."""
    return str(request.scope.get("root_path") or "/ui")  # Mount("/ui") sets it
