"""Where Tether's time goes under load: py-spy samples the `tether serve` process while the
load generator runs one scenario (bridge style, stored conversations); prints a breakdown by
category and the top functions.

    .venv/bin/pip install py-spy      # once, into the venv
    .venv/bin/python -m bench.profile [--stored 200] [--concurrency 1] [--seconds 8] [--gil]
                                      [--full-history]

--full-history: the client resends the whole history naming the conversation (bench.run's
`replay`) instead of sending only the new message.

--gil samples only the thread holding the GIL, i.e. CPU spent in Python (recommended: without
it, threads parked in the executor and the event loop's epoll wait show up as busy).
Not part of `make bench`. The raw collapsed stacks and an SVG flame graph are left in the temp
dir printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import load, procs, seed
from bench.load import Make
from bench.run import Params, Suite, pool_ids, replay, through, visits_for

CATEGORIES = (  # the first match over the whole stack wins
    ("token counting (tiktoken)", ("tether/compaction/tokens.py",)),
    ("thread hand-off (executor submit / result)", ("ThreadPoolExecutor.submit", "_chain_future")),
    (
        "SQLite store (queries, row decoding)",
        ("tether/store/sqlite.py", "tether/store/sqlite_db.py"),
    ),
    ("upstream HTTP client (aiohttp)", ("HttpUpstream",)),
    ("validate_sequence", ("validate_sequence",)),
    ("request parsing (pydantic)", ("parse_chat_request",)),
    ("view rendering", ("tether/compaction/view.py", "Target.view")),
    ("merge", ("tether/engine/merge.py",)),
    ("HTTP server (uvicorn, starlette)", ("uvicorn/protocols", "starlette", "h11")),
    ("other tether code", ("(tether/",)),
)


def summarise(raw: Path, top: int = 25) -> str:
    """A breakdown by category, then self and inclusive shares (py-spy --format raw)."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
        joined = ";".join(frames)
        cat = next(
            (name for name, keys in CATEGORIES if any(k in joined for k in keys)),
            "event loop, I/O, other",
        )
        cats[cat] += n
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "share  category"]
    out += [f"{100 * c / total:5.1f}  {name}" for name, c in cats.most_common()]
    out += ["", "self %  function (file:line)"]
    out += [f"{100 * c / total:5.1f}  {name}" for name, c in own.most_common(top)]
    ours = Counter({k: v for k, v in incl.items() if "(tether/" in k})
    out += ["", "inclusive %  tether function (file:line)"]
    out += [f"{100 * c / total:5.1f}  {name}" for name, c in ours.most_common(top)]
    return "\n".join(out)


def seeded(db: Path, key: str, stored: int, c: int, requests: int) -> dict[str, list[list[str]]]:
    """Pool `key`: enough conversations of `stored` messages for `requests` turns by `c`
    workers, written into the database at `db`."""
    pools = {key: pool_ids(key, stored, c, requests)}
    seeder = seed.Seeder(db)
    for ids in pools[key]:
        for cid in ids:
            seeder.conversation(cid, stored)
    seeder.close()
    return pools


async def drive(
    suite: Suite, key: str, c: int, seconds: float, stream: bool, n: int, make: Make
) -> load.Result:
    client = load.client()
    try:
        pids = {"tether": suite.tether.pid, "upstream": suite.upstream.pid}
        monitor = load.Monitor(pids, suite.tether.pid)
        return await load.run(
            client,
            f"profile {key}",
            make,
            concurrency=c,
            n=n,
            warmup=0,
            max_s=seconds,
            stream=stream,
            monitor=monitor,
        )
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description="py-spy profile of tether under load")
    parser.add_argument("--stored", type=int, default=200, help="messages per conversation")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="only the GIL holder (Python CPU)")
    parser.add_argument(
        "--full-history", action="store_true", help="resend the whole history (named)"
    )
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    c = args.concurrency
    workdir = Path(tempfile.mkdtemp(prefix="tether-profile-"))
    db = workdir / "tether.db"
    procs.migrate(db)
    key = f"p{args.stored}"
    pools = seeded(db, key, args.stored, c, 600 * args.seconds + 20 * c)
    upstream = procs.Upstream()
    tether = procs.Tether(db, upstream.base_url)
    try:
        tether.start()
        suite = Suite(Params.full(), tether, upstream, pools, time.monotonic())
        visits = visits_for(args.stored)
        make = (  # one maker for both phases: a full-history client keeps its histories
            replay(suite, key, args.stream, visits, args.stored)
            if args.full_history
            else through(suite, key, args.stream, visits)
        )
        # warm up outside the profile (the first turn loads the tokenizer)
        asyncio.run(drive(suite, key, c, 10.0, args.stream, c * 20, make))
        upstream.reset()
        raw, svg = workdir / "profile.txt", workdir / "profile.svg"
        record = [spy, "record", "--pid", str(tether.pid), "--rate", str(args.rate)]
        record += ["--duration", str(args.seconds), "--nonblocking"]
        record += ["--gil"] if args.gil else []
        spies = [
            subprocess.Popen([*record, "--format", "raw", "-o", str(raw)], stdout=subprocess.PIPE),
            subprocess.Popen([*record, "-o", str(svg)], stdout=subprocess.PIPE),
        ]
        time.sleep(1.0)  # let py-spy attach before the measured load starts
        result = asyncio.run(drive(suite, key, c, args.seconds, args.stream, 10**6, make))
        for p in spies:
            p.wait(timeout=args.seconds + 30)
    finally:
        tether.stop()
        upstream.close()
    print(f"tether CPU ms/req: {result.cpu_ms_per_req.get('tether', float('nan')):.2f}")
    print(summarise(raw))
    print(f"\nraw stacks: {raw}\nflame graph: {svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
