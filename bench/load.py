"""The asyncio load generator: N workers on lean keep-alive connections (bench/http1.py), bounded
in count and time.

Every request is timed from just before it is sent to the last byte of the response (and, when
streaming, to the first body byte). Bodies are built before the clock starts. While the measured
phase runs, a monitor samples the Tether process's RSS and the CPU time of every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.http1 import Client, HTTPError
from bench.procs import MIB, busy_cpu_seconds, cpu_seconds, rss_bytes


@dataclass(frozen=True, slots=True)
class Req:
    url: str
    body: bytes
    headers: dict[str, str]
    expect: bytes  # must appear in the response body (b"" = only check the status)
    method: str = "POST"


# make(worker_index) -> the next request of that worker
Make = Callable[[int], Req]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of `values`."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Result:
    name: str
    concurrency: int
    stream: bool
    n: int = 0
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0
    lat_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    cpu_ms_per_req: dict[str, float] = field(default_factory=dict)
    rss_peak_mib: float | None = None
    foreign_cores: float = 0.0  # CPU used by processes outside the benchmark, in cores
    skipped: str | None = None

    @property
    def rps(self) -> float:
        return self.n / self.elapsed if self.elapsed > 0 else math.nan

    def p(self, q: float) -> float:
        return percentile(self.lat_ms, q)

    def ttfb(self, q: float) -> float:
        return percentile(self.ttfb_ms, q)

    def line(self) -> str:
        if self.skipped:
            return f"{self.name:<44} c={self.concurrency:<3} skipped: {self.skipped}"
        extra = f" ttfb p50 {self.ttfb(50):7.2f}" if self.stream else ""
        err = f" ERRORS {self.errors}: {self.first_error}" if self.errors else ""
        other = f" (other load {self.foreign_cores:.2f} cores)" if self.foreign_cores > 0.1 else ""
        return (
            f"{self.name:<40} c={self.concurrency:<3} n={self.n:<5} p50 {self.p(50):7.2f} ms "
            f"p99 {self.p(99):7.2f} ms max {max(self.lat_ms, default=math.nan):7.1f} ms "
            f"{self.rps:6.0f} req/s{extra}{other}{err}"
        )


class Monitor:
    """CPU time of each process over the measured phase, and the Tether process's peak RSS."""

    def __init__(self, pids: dict[str, int], rss_pid: int | None, interval: float = 0.05) -> None:
        self.pids = pids
        self.rss_pid = rss_pid
        self.interval = interval
        self.peak = 0
        self._task: asyncio.Task[None] | None = None
        self._cpu0: dict[str, float] = {}

    def _cpu(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        t = os.times()
        out["loadgen"] = t.user + t.system
        out["machine"] = busy_cpu_seconds()
        out["wall"] = time.perf_counter()
        return out

    async def _sample(self) -> None:
        assert self.rss_pid is not None
        while True:
            self.peak = max(self.peak, rss_bytes(self.rss_pid) or 0)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.peak = 0
        self._cpu0 = self._cpu()
        if self.rss_pid is not None:
            self._task = asyncio.create_task(self._sample())

    async def stop(self, result: Result) -> None:
        cpu1 = self._cpu()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.peak = max(self.peak, rss_bytes(self.rss_pid or 0) or 0)
            result.rss_peak_mib = self.peak / MIB
        delta = {k: cpu1[k] - self._cpu0[k] for k in cpu1}
        ours = sum(v for k, v in delta.items() if k not in ("machine", "wall"))
        if delta["wall"] > 0:
            result.foreign_cores = max(0.0, (delta["machine"] - ours) / delta["wall"])
        if result.n:
            result.cpu_ms_per_req = {
                k: v * 1000 / result.n for k, v in delta.items() if k not in ("machine", "wall")
            }


async def _one(client: Client, req: Req, stream: bool) -> tuple[float, float, str]:
    """(total s, first-byte s, error or '') of one request."""
    address, data = client.request(req.url, req.body, req.headers, req.method)
    t0 = time.perf_counter()
    r = await client.send(address, data)
    total, first = r.done - t0, (r.first_byte or r.done) - t0
    if r.status != 200:
        return total, first, f"HTTP {r.status}: {r.body[:200]!r}"
    if stream and not req.expect:  # an SSE stream (a streamed page says what it must hold)
        if b"[DONE]" not in r.body[-64:]:
            return total, first, f"stream ended without [DONE]: {r.body[-64:]!r}"
    elif req.expect and req.expect not in r.body:
        return total, first, f"unexpected body: {r.body[:200]!r}"
    return total, first, ""


async def _phase(
    client: Client,
    make: Make,
    concurrency: int,
    n: int,
    max_s: float,
    stream: bool,
    result: Result | None,
    max_errors: int = 50,
) -> float:
    """Run up to `n` requests on `concurrency` workers for at most `max_s` seconds."""
    counter = itertools.count()
    errors = 0
    deadline = time.perf_counter() + max_s

    async def worker(w: int) -> None:
        nonlocal errors
        while next(counter) < n and time.perf_counter() < deadline and errors < max_errors:
            req = make(w)
            try:
                total, first, err = await _one(client, req, stream)
            except (HTTPError, OSError, TimeoutError) as exc:
                total, first, err = math.nan, math.nan, repr(exc)
            if err:
                errors += 1
                if result is not None:
                    result.errors += 1
                    result.first_error = result.first_error or err
                continue
            if result is not None:
                result.n += 1
                result.lat_ms.append(total * 1000)
                if stream:
                    result.ttfb_ms.append(first * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return time.perf_counter() - started


async def run(
    client: Client,
    name: str,
    make: Make,
    *,
    concurrency: int,
    n: int,
    warmup: int,
    max_s: float,
    stream: bool,
    monitor: Monitor,
) -> Result:
    """Warm up, then measure `n` requests (or as many as fit in `max_s`)."""
    result = Result(name, concurrency, stream)
    if warmup:
        await _phase(client, make, concurrency, warmup, max_s, stream, None)
    monitor.start()
    result.elapsed = await _phase(client, make, concurrency, n, max_s, stream, result)
    await monitor.stop(result)
    print(result.line(), flush=True)
    return result


def client() -> Client:
    return Client(timeout=120.0)
