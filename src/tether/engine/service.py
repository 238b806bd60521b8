"""The engine: starts turns (each a `TurnRun` in its own task), finds and stops them, runs the
start-up sweeps, and drains on shutdown. What it shares with every turn is `Deps`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

import structlog

from tether.config import Settings
from tether.coordination.base import Coordinator
from tether.coordination.local import LocalCoordinator
from tether.coordination.lru import Lru
from tether.coordination.stream import TurnStream
from tether.engine.catalog import ModelCatalog
from tether.engine.deps import Deps
from tether.engine.ids import mint_turn_id
from tether.engine.request import TurnInfo, TurnRequest
from tether.engine.turn import TurnRun
from tether.errors import TetherError
from tether.model import Turn
from tether.store.base import Store
from tether.tools.registry import Registry
from tether.upstream.base import Upstream

log = structlog.get_logger("tether.turn")

RESTARTED = {
    "message": "the server stopped before this turn finished; nothing of it was stored — send "
    "it again (with the same Idempotency-Key, if it had one)",
    "type": "server_error",
    "code": "server_restarted",
}


class Engine:
    def __init__(
        self,
        store: Store,
        upstream: Upstream | None,
        settings: Settings,
        coordinator: Coordinator | None = None,
        errors: Callable[[Exception], TetherError | None] | None = None,
        tools: Registry | None = None,
    ) -> None:
        """`errors`: what a client is told of an exception a turn met (a storage failure, say),
        or None for a bug (answered 500); by default only `TetherError`s are told."""
        self.store = store
        self.upstream = upstream
        self.settings = settings
        self.coordinator = coordinator or LocalCoordinator(
            owner=settings.instance_id,
            queue_timeout=settings.queue_timeout,
            resume_bytes=settings.resume_buffer_bytes,
        )
        self.deps = Deps(
            store=store,
            upstream=upstream,
            settings=settings,
            coordinator=self.coordinator,
            errors=errors or _told,
            views=Lru(settings.view_cache_messages, lambda v: len(v.messages) + 1, stamped=True),
            tools=tools,
        )
        self.tools = tools
        self.views = self.deps.views
        self.windows = self.deps.windows  # context windows learned from the upstream
        self.catalog = ModelCatalog(upstream, settings.unknown_models == "reject")
        self._tasks: set[asyncio.Task[None]] = set()
        self.draining = False  # shutting down: no new turns

    async def sweep(self) -> None:
        """Start-up: what this server (the coordinator's owner) left behind when it stopped.
        Its idempotency claims still running never committed, so their retries may run; its
        turns still running never finished: marked incomplete."""
        await self.store.reap_idempotency(self.settings.idempotency_retention, running_too=True)
        abandoned = await self.store.abandon_running_turns(RESTARTED)
        if abandoned:
            log.warning("turns.marked_incomplete", turns=abandoned)

    async def start(self, req: TurnRequest) -> tuple[TurnRun, TurnInfo]:
        """Start a turn; return once it knows where it runs (or raise its error)."""
        self._check(req)
        model = req.model or self.settings.default_model or ""
        await self.catalog.require(model)
        default_max = self.settings.default_max_tokens
        if default_max and not {"max_tokens", "max_completion_tokens"} & req.params.keys():
            req = replace(req, params={**req.params, "max_tokens": default_max})
        record = Turn(
            id=mint_turn_id(),
            status="running",
            model=model,
            stream=req.stream,
            started_at=time.time(),
            notes=dict(req.notes) if req.notes else None,
        )
        run = TurnRun(self.deps, req, record)
        task = asyncio.create_task(run.run())
        run.task = task
        self.coordinator.open(run.out)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        info = await asyncio.shield(run.ready)
        return run, info

    def _check(self, req: TurnRequest) -> None:
        if self.draining:
            raise TetherError(
                503,
                "server_shutting_down",
                "the server is shutting down; retry on another instance or in a moment",
                headers={"Retry-After": "5"},
            )
        if self.upstream is None:
            raise TetherError(
                503,
                "upstream_not_configured",
                "no upstream model server is configured: set TETHER_UPSTREAM_BASE_URL "
                "(and TETHER_UPSTREAM_API_KEY, TETHER_DEFAULT_MODEL) and restart",
            )
        if not (req.model or self.settings.default_model):
            raise TetherError(
                400,
                "model_required",
                "no model in the request and no TETHER_DEFAULT_MODEL set",
                param="model",
            )

    def find(self, tenant_id: str, conversation_id: str, turn_id: str) -> TurnStream | None:
        """A turn running here, or a recent stream still buffered, if this tenant's
        conversation (named by its id as the client knows it) owns it."""
        found = self.coordinator.find(turn_id)
        if found is None or found.tenant_id != tenant_id:
            return None
        known = self.deps.canonical.get((tenant_id, conversation_id)) or conversation_id
        return found if found.conversation_id in (conversation_id, known) else None

    async def drain(self, grace: float) -> None:
        """Graceful shutdown: refuse new turns, let running ones finish within `grace`
        seconds, then stop the rest (recorded incomplete; their streams get an error event)."""
        self.draining = True
        if self._tasks:
            log.info("shutdown.draining", turns=len(self._tasks), grace_s=grace)
            await asyncio.wait(list(self._tasks), timeout=grace)
        left = [s for s in self.coordinator.running() if s.stop("shutdown")]
        if left:
            log.warning("shutdown.turns_stopped", turns=len(left))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)


def _told(exc: Exception) -> TetherError | None:
    return exc if isinstance(exc, TetherError) else None
