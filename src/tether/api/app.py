"""The ASGI application: routes, CORS, error envelopes, start-up and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount

from tether.api.auth import Authenticator
from tether.api.errors import error_of, http_error, store_error, tether_error, unexpected_error
from tether.api.gate import AuthGate
from tether.api.hosts import HostGuard, allowed_hosts
from tether.api.jsonbody import EXPOSED_HEADERS
from tether.api.observe import Observe
from tether.api.ratelimit import RateLimiter
from tether.api.routes import routes
from tether.api.state import AppState
from tether.compaction import tokens
from tether.config import Settings
from tether.engine.search import tool_search
from tether.engine.service import Engine
from tether.errors import TetherError
from tether.store import open_store
from tether.store.base import Store
from tether.store.errors import StoreError
from tether.tools import registry
from tether.upstream.base import Upstream
from tether.upstream.client import HttpUpstream
from tether.web.routes import routes as dashboard

log = structlog.get_logger("tether.app")

REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-Hermes-Session-Id",
    "X-Request-Id",
    "X-Tether-Conversation",
    "X-Tether-History",
    "X-Tether-Compaction",
    "X-Tether-Concurrency",
    "X-Tether-Tools",
    "If-Match",
]


def make_upstream(settings: Settings) -> Upstream | None:
    if not settings.upstream_base_url:
        return None
    return HttpUpstream(
        settings.upstream_base_url,
        settings.upstream_api_key,
        timeout=settings.upstream_timeout,
        connect_timeout=settings.upstream_connect_timeout,
        retries=settings.upstream_retries,
        backoff=settings.upstream_backoff,
    )


async def _discover_models(engine: Engine) -> None:
    """Learn the upstream's models and the context windows it reports, when it lists them."""
    await engine.catalog.refresh()
    engine.windows.update(engine.catalog.windows)
    if engine.catalog.windows:
        log.info("upstream.context_windows", windows=engine.catalog.windows)


async def _reap(store: Store, retention: float, every: float = 600.0) -> None:
    """Forget idempotency results older than the retention, every few minutes."""
    while True:
        await asyncio.sleep(every)
        try:
            removed = await store.reap_idempotency(retention)
        except Exception:
            log.exception("idempotency.reap_failed")
            continue
        if removed:
            log.info("idempotency.reaped", removed=removed)


async def _start(
    settings: Settings, store: Store | None, upstream: Upstream | None, limiter: RateLimiter | None
) -> AppState:
    """Open the store, build the engine, and sweep what a previous process left behind."""
    tokens.use(settings.tokenizer)
    db = store or open_store(settings.database_url, owner=settings.instance_id)
    await db.open()
    await db.migrate()
    up = upstream if upstream is not None else make_upstream(settings)
    tools = registry.build(settings, partial(tool_search, db))
    if tools is not None:
        await tools.start()  # each MCP server connects in the background; down ones retry
    engine = Engine(db, up, settings, errors=error_of, tools=tools)
    if up is not None:
        await _discover_models(engine)
    state = AppState(settings, db, up, engine, Authenticator(db, limiter=limiter))
    await engine.sweep()  # what this server left running when it last stopped
    return state


def _middleware(settings: Settings) -> list[Middleware]:
    """Outermost first: the request's id and metrics (api/observe.py), the Host check (before
    CORS answers anything), CORS if on (it answers preflights itself), then authentication
    (api/gate.py), so its errors carry CORS headers."""
    middleware = [Middleware(Observe), Middleware(HostGuard, allowed=allowed_hosts(settings))]
    if settings.cors_origins:  # off by default: no layer to pass through on every request
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=REQUEST_HEADERS,
                expose_headers=EXPOSED_HEADERS,
            )
        )
    middleware.append(Middleware(AuthGate, preflights=bool(settings.cors_origins)))
    return middleware


def create_app(
    settings: Settings, store: Store | None = None, upstream: Upstream | None = None
) -> Starlette:
    """Build the app. `store` and `upstream` default to what `settings` describe."""
    limiter = None
    if settings.rate_limit_rps > 0:
        limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = app.state.tether = await _start(settings, store, upstream, limiter)
        retention = settings.idempotency_retention
        reaper = asyncio.create_task(_reap(state.store, retention, every=min(600.0, retention)))
        try:
            yield
        finally:
            reaper.cancel()
            await state.engine.drain(settings.shutdown_grace_seconds)
            if state.engine.tools is not None:
                await state.engine.tools.close()
            if state.upstream is not None:
                await state.upstream.aclose()
            await state.store.close()

    return Starlette(
        routes=[*routes, Mount("/ui", routes=dashboard)],  # the dashboard: tether/web/
        middleware=_middleware(settings),
        lifespan=lifespan,
        exception_handlers={
            TetherError: tether_error,
            StoreError: store_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
    )
