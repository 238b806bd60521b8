"""One Tether turn, timed stage by stage, in-process: the ASGI app behind httpx2.ASGITransport
(no client socket), the scripted upstream as a real process over loopback HTTP, a seeded SQLite
file. Sequential requests (c=1) on stored conversations, bridge style.

    .venv/bin/python -m bench.inprocess [--stored 200] [--n 300] [--pyinstrument]

Stage times are wall-clock, taken by wrapping every public coroutine method of the store and the
upstream's `complete` on the live objects (src/ is not changed); with --pyinstrument the run is
also profiled (async mode).
Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import inspect
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import orjson

from bench import procs, seed
from tether.api.app import create_app
from tether.cli import setup_logging
from tether.config import Settings


def _wrap(obj: Any, name: str, sink: dict[str, list[float]]) -> None:
    fn: Callable[..., Awaitable[Any]] = getattr(obj, name)

    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            sink[name].append((time.perf_counter() - t0) * 1000)

    setattr(obj, name, timed)


class GcTimer:
    """Time spent in the cyclic garbage collector, per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.ms: dict[int, float] = defaultdict(float)
        self.count: dict[int, int] = defaultdict(int)
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.ms[info["generation"]] += (time.perf_counter() - self._t0) * 1000
            self.count[info["generation"]] += 1


async def run(db: Path, upstream_url: str, convs: list[str], n: int, profile: bool) -> None:
    settings = Settings(
        database_url=f"sqlite:///{db}",
        upstream_base_url=upstream_url,
        default_model="scripted",
        log_level="warning",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = app.state.tether
        sink: dict[str, list[float]] = defaultdict(list)
        for name in dir(state.store):  # every public coroutine method of the store
            if name.startswith("_") or name in ("open", "close", "migrate"):
                continue
            if inspect.iscoroutinefunction(getattr(state.store, name)):
                _wrap(state.store, name, sink)
        _wrap(state.upstream, "complete", sink)
        transport = httpx2.ASGITransport(app=app)
        totals: list[float] = []
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:

            async def one(i: int, record: bool) -> None:
                body = orjson.dumps(
                    {"model": "scripted", "messages": [{"role": "user", "content": f"hi {i}"}]}
                )
                headers = {
                    "Content-Type": "application/json",
                    "X-Hermes-Session-Id": convs[i % len(convs)],
                }
                t0 = time.perf_counter()
                r = await client.post("/v1/chat/completions", content=body, headers=headers)
                if record:
                    totals.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()

            for i in range(30):
                await one(i, False)
            sink.clear()
            gc_timer = GcTimer()
            gc.callbacks.append(gc_timer)
            profiler = None
            if profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005, async_mode="enabled")
                profiler.start()
            for i in range(30, 30 + n):
                await one(i, True)
            if profiler is not None:
                profiler.stop()
            gc.callbacks.remove(gc_timer)
    print(f"{n} sequential turns; per turn, wall-clock ms (mean · p50):")
    print(
        f"  whole request (ASGI, no client socket): {statistics.mean(totals):6.2f} · "
        f"{statistics.median(totals):6.2f}"
    )
    stage_sum = 0.0
    for name, values in sorted(sink.items()):
        per_turn = sum(values) / n
        stage_sum += per_turn
        print(
            f"  {name:<18} {len(values) / n:4.1f} calls/turn  {per_turn:6.2f} ms/turn "
            f"(p50 per call {statistics.median(values):.3f} ms)"
        )
    rest = statistics.mean(totals) - stage_sum
    print(f"  everything else (routing, pydantic, merge, tokens, view, JSON): {rest:6.2f} ms/turn")
    for gen in sorted(gc_timer.count):
        print(
            f"  gc generation {gen}: {gc_timer.count[gen]} collections, "
            f"{gc_timer.ms[gen] / n:.3f} ms/turn (inside the figures above)"
        )
    if profiler is not None:
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> int:
    parser = argparse.ArgumentParser(description="stage timings of one turn, in-process")
    parser.add_argument("--stored", type=int, default=200)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args()
    setup_logging("warning")
    with tempfile.TemporaryDirectory(prefix="tether-inproc-") as tmp:
        db = Path(tmp) / "tether.db"
        procs.migrate(db)
        convs = [f"inproc-{i}" for i in range(max(1, (args.n + 30) // 5))]
        seeder = seed.Seeder(db)
        for cid in convs:
            seeder.conversation(cid, args.stored)
        seeder.close()
        upstream = procs.Upstream()
        try:
            asyncio.run(run(db, upstream.base_url, convs, args.n, args.pyinstrument))
        finally:
            upstream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
