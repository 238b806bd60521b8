"""The operator's routes, open like /health: `GET /metrics` (Prometheus' text format, the
counters of tether/metrics.py) and `GET /ready` — whether this server can answer a turn now:
its database answers a read and its upstream its model list (checked at most once a second;
`/health` stays liveness only)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tether import metrics
from tether.api.access import state_of
from tether.api.jsonbody import json_response
from tether.api.state import AppState

CHECK_TIMEOUT = 2.0
_checked: dict[int, tuple[float, dict[str, str]]] = {}  # per app state: when, what


async def get_metrics(request: Request) -> Response:
    body, media_type = metrics.render()
    return Response(body, 200, media_type=media_type)


async def _database(state: AppState) -> str:
    try:
        await asyncio.wait_for(state.store.resolve("", "ready-check"), CHECK_TIMEOUT)
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


async def _upstream(state: AppState) -> str:
    if state.upstream is None:
        return "unavailable: no upstream configured"
    try:
        await asyncio.wait_for(state.upstream.models(), CHECK_TIMEOUT)
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


async def get_ready(request: Request) -> Response:
    state = state_of(request)
    now = time.monotonic()
    seen = _checked.get(id(state))
    if seen is None or now - seen[0] > 1.0:
        database, upstream = await asyncio.gather(_database(state), _upstream(state))
        seen = (now, {"database": database, "upstream": upstream})
        _checked[id(state)] = seen
    checks = seen[1]
    failing = [name for name, result in checks.items() if result != "ok"]
    if not failing:
        return json_response({"status": "ready", "checks": checks})
    body: dict[str, Any] = {
        "error": {
            "message": "not ready: " + "; ".join(f"{n} {checks[n]}" for n in failing),
            "type": "server_error",
            "param": None,
            "code": "not_ready",
        },
        "checks": checks,
    }
    return json_response(body, 503, {"Retry-After": "5"})
