"""What the routes share: settings, store, upstream, engine, authenticator."""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.api.auth import Authenticator
from tether.config import Settings
from tether.coordination.lru import Lru
from tether.engine.service import Engine
from tether.store.base import Store
from tether.upstream.base import Upstream


@dataclass(slots=True)
class AppState:
    settings: Settings
    store: Store
    upstream: Upstream | None
    engine: Engine
    auth: Authenticator
    # (tenant, turn id) → (conversation id, its last seq then): where a Responses turn left its
    # conversation, so previous_response_id at the head continues it without a read (checked
    # against the cached view; any doubt, the store is asked)
    response_points: Lru[tuple[str, str], tuple[str, int]] = field(
        default_factory=lambda: Lru(10_000)
    )
