"""A /health probe for attack tests: a thread that asks every 100 ms, each answer within 1 s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx2


@dataclass
class Probe:
    url: str
    interval: float = 0.1
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    statuses: set[int] = field(default_factory=set)
    accept: tuple[int, ...] = (200,)  # 503 too where the test breaks the database on purpose
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx2.Client(timeout=1.0) as client:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    # a new connection each time: a kept-alive one would hide a full accept queue
                    resp = client.get(self.url, headers={"Connection": "close"})
                    self.statuses.add(resp.status_code)
                    if resp.status_code not in self.accept:
                        self.failures.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                except httpx2.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.latencies.append(time.monotonic() - t0)
                self._stop.wait(self.interval)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)

    def check(self, limit: float = 1.0) -> None:
        assert self.latencies, "the probe never ran"
        assert not self.failures, f"/health failed {len(self.failures)}x: {self.failures[:3]}"
        assert self.worst < limit, f"/health took {self.worst:.2f} s (limit {limit} s)"


@contextmanager
def health_probe(base_url: str, accept: tuple[int, ...] = (200,)) -> Iterator[Probe]:
    """Probe `base_url`/health while the block runs; the caller checks the probe after it."""
    probe = Probe(f"{base_url}/health", accept=accept)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not probe.latencies and time.monotonic() < deadline:  # the probe works before
        time.sleep(0.01)
    try:
        yield probe
    finally:
        done = len(probe.latencies)
        deadline = time.monotonic() + 5
        while len(probe.latencies) == done and time.monotonic() < deadline:  # ...and after
            time.sleep(0.01)
        probe._stop.set()
        thread.join(5)
