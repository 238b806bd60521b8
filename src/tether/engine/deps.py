"""What every turn shares: the store, the upstream, the settings, the coordinator, and the
in-process caches that spare a database round trip (engine/cache.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tether import metrics
from tether.config import Settings
from tether.coordination.base import Coordinator
from tether.coordination.lru import Lru
from tether.engine.approvals import Approvals
from tether.engine.cache import CachedView
from tether.errors import TetherError
from tether.store.base import Store
from tether.tools.registry import Registry
from tether.upstream.base import Upstream


@dataclass(slots=True, kw_only=True)
class Deps:
    store: Store
    upstream: Upstream | None
    settings: Settings
    coordinator: Coordinator
    errors: Callable[[Exception], TetherError | None]  # what a client is told of an exception
    views: Lru[tuple[str, str], CachedView]  # (tenant, conversation id) → its view
    canonical: Lru[tuple[str, str], str] = field(default_factory=lambda: Lru(65536))
    windows: dict[str, int] = field(default_factory=dict)  # context windows learned
    tools: Registry | None = None  # server-side tools (None: none configured)
    approvals: Approvals = field(default_factory=Approvals)  # tool calls waiting for a person

    def cached(self, tenant_id: str, conversation_id: str) -> CachedView | None:
        """The conversation's cached view, if there is one and it is current."""
        view = self.views.get((tenant_id, conversation_id))
        metrics.VIEW_CACHE.labels("miss" if view is None else "hit").inc()
        if view is None or self.coordinator.view_current(tenant_id, conversation_id, view.state):
            return view
        self.views.drop((tenant_id, conversation_id))
        return None
