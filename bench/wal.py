"""Sustained writes: how large SQLite's `-wal` file grows under steady turns.

A real `tether serve` on a seeded database (conversations of 20 messages), and `concurrency`
workers sending bridge-style turns for `seconds`, each to the next of its own conversations
(so most turns miss the view cache and read, as on a busy server with many chats). The `-wal`
file's size is sampled every 100 ms. Target: it stays under 64 MiB (issue 12: in a 25-minute
run it reached 3.8 GB beside a 1.1 GB database, folded back only at shutdown).

Run alone: `.venv/bin/python -m bench.wal [--seconds 60]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import load, procs, seed
from bench.load import Monitor, Req

TARGET_MIB = 64.0
JSON = {"Content-Type": "application/json"}


@dataclass
class WalRun:
    seconds: float
    turns: int
    errors: int
    rps: float
    wal_peak_mib: float
    wal_end_mib: float
    db_mib: float
    conversations: int

    @property
    def ok(self) -> bool:
        return self.wal_peak_mib < TARGET_MIB and not self.errors

    def line(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        return (
            f"{verdict} WAL under sustained writes: peak {self.wal_peak_mib:.1f} MiB "
            f"(target < {TARGET_MIB:.0f}), {self.turns:,} turns in {self.seconds:.0f} s "
            f"({self.rps:,.0f}/s, {self.errors} errors), database {self.db_mib:.0f} MiB, "
            f"WAL at the end {self.wal_end_mib:.1f} MiB"
        )


def _size_mib(path: Path) -> float:
    try:
        return os.stat(path).st_size / procs.MIB
    except FileNotFoundError:
        return 0.0


async def _sample(wal: Path, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], _size_mib(wal))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def _drive(tether: procs.Tether, convs: list[list[str]], seconds: float) -> load.Result:
    url = f"{tether.url}/v1/chat/completions"
    turns = [0] * len(convs)

    def make(w: int) -> Req:
        mine = convs[w]
        turns[w] += 1
        text = f"sustained write {w}-{turns[w]}"
        body = orjson.dumps({"model": "scripted", "messages": [{"role": "user", "content": text}]})
        headers = {**JSON, "X-Hermes-Session-Id": mine[turns[w] % len(mine)]}
        return Req(url, body, headers, text.encode())

    client = load.client()
    try:
        return await load.run(
            client,
            "sustained writes",
            make,
            concurrency=len(convs),
            n=10**9,
            warmup=0,
            max_s=seconds,
            stream=False,
            monitor=Monitor({"tether": tether.pid}, None),
        )
    finally:
        await client.aclose()


async def _measure(
    tether: procs.Tether, wal: Path, convs: list[list[str]], s: float
) -> tuple[load.Result, float]:
    peak = [0.0]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(wal, peak, stop))
    result = await _drive(tether, convs, s)
    stop.set()
    await sampler
    return result, peak[0]


def run(workdir: Path, seconds: float = 45.0, conversations: int = 4000, c: int = 8) -> WalRun:
    db = workdir / "wal.db"
    procs.migrate(db)
    seeder = seed.Seeder(db)
    convs = [[f"wal-w{w}-{i}" for i in range(conversations // c)] for w in range(c)]
    for ids in convs:
        for cid in ids:
            seeder.conversation(cid, 20)
    seeder.close()
    upstream = procs.Upstream()
    tether = procs.Tether(db, upstream.base_url)
    try:
        tether.start()
        t0 = time.perf_counter()
        result, peak = asyncio.run(_measure(tether, Path(f"{db}-wal"), convs, seconds))
        elapsed = time.perf_counter() - t0
        end = _size_mib(Path(f"{db}-wal"))
    finally:
        tether.stop()
        upstream.close()
    return WalRun(
        elapsed,
        result.n,
        result.errors,
        result.n / elapsed if elapsed else 0.0,
        peak,
        end,
        _size_mib(db),
        conversations,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--conversations", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tether-wal-") as tmp:
        print(run(Path(tmp), args.seconds, args.conversations, args.concurrency).line())


if __name__ == "__main__":
    main()
