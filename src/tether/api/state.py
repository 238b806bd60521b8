"""What the routes share: settings, store, upstream, engine, authenticator."""

from __future__ import annotations

from dataclasses import dataclass

from tether.api.auth import Authenticator
from tether.config import Settings
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
