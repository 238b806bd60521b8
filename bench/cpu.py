"""Tether's CPU per turn beside the scripted upstream's, for the same requests: the ratio issue 14
sets targets on (non-streamed ≤ 1.0×, streamed ≤ 1.3×), measured quickly on one scenario.

    .venv/bin/python -m bench.cpu [--stored 200] [--concurrency 1] [--seconds 8] [--stream]

Bridge-style turns on seeded conversations (as `make bench`'s "tether, stored N" rows), CPU of
both processes read from /proc over the measured phase. Several rounds, so that one noisy
round shows; for a before/after claim run it on both builds in alternation.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.profile import drive, seeded
from bench.run import Params, Suite, through, visits_for


def main() -> int:
    parser = argparse.ArgumentParser(description="Tether's CPU per turn against the upstream's")
    parser.add_argument("--stored", type=int, default=200, help="messages per conversation")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=6.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    c = args.concurrency
    db = Path(tempfile.mkdtemp(prefix="tether-cpu-")) / "tether.db"
    procs.migrate(db)
    key = f"p{args.stored}"
    turns = int(800 * args.seconds * (args.rounds + 1)) + 20 * c
    pools = seeded(db, key, args.stored, c, turns)
    upstream = procs.Upstream()
    tether = procs.Tether(db, upstream.base_url)
    ratios: list[float] = []
    try:
        tether.start()
        suite = Suite(Params.full(), tether, upstream, pools, time.monotonic())
        make = through(suite, key, args.stream, visits_for(args.stored))
        asyncio.run(drive(suite, key, c, 3.0, args.stream, 10**6, make))  # warm-up, not counted
        for _ in range(args.rounds):
            upstream.reset()
            r = asyncio.run(drive(suite, key, c, args.seconds, args.stream, 10**6, make))
            ours, theirs = r.cpu_ms_per_req["tether"], r.cpu_ms_per_req["upstream"]
            ratios.append(ours / theirs)
            print(
                f"n={r.n:5d}  tether {ours:.3f} ms/turn  upstream {theirs:.3f} ms/req  "
                f"ratio {ours / theirs:.2f}x  p50 {r.p(50):.2f} ms"
            )
    finally:
        tether.stop()
        upstream.close()
    print(f"median ratio {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
