"""The models the upstream serves, so a request naming one it does not serve is a clear
`404 model_not_found` instead of a turn run with a made-up context window.

The list comes from the upstream's `GET /models` at start-up (with the context windows it
reports, if any) and is read again, at most every REFRESH_SECONDS, when a request names a model
it does not hold (the upstream may have added one). An upstream that cannot list its models is
not checked. `TETHER_UNKNOWN_MODELS=allow` turns the check off, for upstreams that serve one
model under any name (the bundled local model is run that way).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from tether.errors import TetherError
from tether.upstream.base import Upstream, context_windows

log = structlog.get_logger("tether.models")

REFRESH_SECONDS = 30.0
LIST_TIMEOUT = 5.0
_NAMED = 10  # models named in the error message


class ModelCatalog:
    def __init__(self, upstream: Upstream | None, check: bool) -> None:
        self.upstream = upstream
        self.check = check
        self.ids: set[str] | None = None  # None: the upstream's list is not known
        self.windows: dict[str, int] = {}  # context windows the list reports
        self._listed_at = 0.0

    async def refresh(self) -> dict[str, Any] | None:
        """Read the upstream's model list; None (and a warning) if it cannot be read."""
        if self.upstream is None:
            return None
        self._listed_at = time.monotonic()
        try:
            listing = await asyncio.wait_for(self.upstream.models(), timeout=LIST_TIMEOUT)
        except (TetherError, TimeoutError) as exc:
            log.warning("upstream.models_unavailable", error=str(exc))
            return None
        data = listing.get("data")
        if isinstance(data, list):
            self.ids = {
                m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)
            }
        self.windows.update(context_windows(listing))
        return listing

    async def require(self, model: str) -> None:
        """Raise 404 model_not_found if the upstream lists its models and `model` is not one."""
        if not self.check or self.ids is None or model in self.ids:
            return
        if time.monotonic() - self._listed_at >= REFRESH_SECONDS:
            await self.refresh()
            if self.ids is None or model in self.ids:
                return
        served = sorted(self.ids)
        named = ", ".join(served[:_NAMED]) + (", …" if len(served) > _NAMED else "")
        raise TetherError(
            404,
            "model_not_found",
            f"the upstream does not serve model {model!r} (it serves: {named or 'none'}); name "
            "one of those, or set TETHER_UNKNOWN_MODELS=allow if the upstream takes any name",
            param="model",
        )
