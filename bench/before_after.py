"""Chat turns with the search index kept up to date against the code before it existed (issue 16:
Tether's CPU per turn within 10% of before).

*Before* is commit BEFORE (the last one before the index, migration 0006), its `src/` unpacked
with `git archive` into the temp dir and run by the same interpreter with `PYTHONPATH` pointing
at it (checked: there `tether` is that copy and `tether.store.sqlite_search` does not exist).
*After* is the working tree. Each has its own `tether serve` on its own SQLite file, migrated by
its own code and seeded alike (bench/seed.py: conversations of STORED messages; after's file
also holds those messages' search rows, written by migration 0006's own backfill statements),
both on one scripted upstream. The turn is the bridge's: only the new user message, the
conversation in `X-Hermes-Session-Id`, 5 turns in a row per conversation (as `make bench`'s
"stored 200" rows). At c=1 and c=8 the servers run in BLOCKS alternating blocks (after,
before, noindex, noindex, before, after, …) so that drift on the machine hits them alike. A
server's CPU per turn is all the CPU its process used (/proc) from the level's first block to
SETTLE seconds after its last, divided by its turns: work a server does in the background (the
search backlog's batched indexing, since e46eb7a) counts wherever it falls.

A third server, a diagnostic and no target, runs the working tree with its FTS5 writes turned
off (a `sitecustomize.py` on its PYTHONPATH replaces `tether.store.sqlite_search.index_messages`
with a no-op before the server starts — the call a turn's commit made before e46eb7a, and the
backlog's drain makes since; checked like the others): after ÷ that is what the FTS5 writes
cost, that ÷ before what everything else changed since BEFORE costs.

Run alone: `.venv/bin/python -m bench.before_after [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench import load, procs, seed
from bench.load import Make, Monitor, Req, Result

BEFORE = "f89bc27"
STORED = 200
VISITS = 5  # turns in a row per conversation
BLOCKS = 10
LEVELS = (1, 8)
TARGET_RATIO = 1.10
SETTLE = 2.0  # s after a level's last block: background work (the search backlog) finishes
JSON = {"Content-Type": "application/json"}
MIGRATION = procs.ROOT / "src/tether/store/migrations/sqlite/0006_manage_search.sql"


STUB = """\
# bench/before_after.py: a diagnostic server that writes no FTS5 rows
import tether.store.sqlite_search as _search


def _off(*args, **kwargs):
    return None


_search.index_messages = _off
"""
LABELS = {
    "before": f"{BEFORE} (no index)",
    "after": "working tree (index)",
    "noindex": "working tree, FTS5 writes off (diagnostic)",
}


@dataclass
class Side:
    label: str  # "before", "after" or "noindex"
    pythonpath: str | None
    imported: str = ""  # where `tether` came from, as the server's interpreter sees it
    db: Path | None = None
    tether: procs.Tether | None = None
    pools: dict[int, list[list[str]]] = field(default_factory=dict)


@dataclass
class BeforeAfter:
    n: dict[int, int]
    results: dict[tuple[str, int], Result] = field(default_factory=dict)  # (label, c)
    imported: dict[str, str] = field(default_factory=dict)
    seeded_s: float = 0.0
    error: str | None = None

    def ratio(self, c: int, top: str = "after", bottom: str = "before") -> float:
        a, b = self.results.get((top, c)), self.results.get((bottom, c))
        if a is None or b is None or not a.n or not b.n:
            return math.nan
        return a.cpu_ms_per_req["tether"] / b.cpu_ms_per_req["tether"]


def checkout(commit: str = BEFORE) -> Path:
    """`src/` of `commit`, unpacked once into the temp dir (reused while it is there)."""
    root = Path(tempfile.gettempdir()) / f"tether-bench-before-{commit}"
    if not (root / "src/tether/__init__.py").exists():
        out = subprocess.run(
            ["git", "-C", str(procs.ROOT), "archive", commit, "src"],
            capture_output=True,
            check=True,
        ).stdout
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(out)) as tar:
            tar.extractall(root, filter="data")
    return root / "src"


def stub(workdir: Path) -> str:
    """A PYTHONPATH directory whose sitecustomize.py turns a turn's index writes off."""
    where = workdir / "noindex"
    where.mkdir(exist_ok=True)
    (where / "sitecustomize.py").write_text(STUB)
    return str(where)


def which_code(pythonpath: str | None) -> tuple[str, bool, bool]:
    """(tether's file, whether tether.store.sqlite_search exists, whether its index_messages
    is the stub) for that PYTHONPATH."""
    env = procs.tether_env(Path("/nonexistent.db"))
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    probe = (
        "import importlib.util, sys, tether; print(tether.__file__); "
        "found = importlib.util.find_spec('tether.store.sqlite_search') is not None; "
        "print(found); print(found and sys.modules['tether.store.sqlite_search']"
        ".__dict__.get('index_messages').__name__ == '_off' "
        "if 'tether.store.sqlite_search' in sys.modules else False)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], out[1] == "True", out[2] == "True"


def migrate(db: Path, pythonpath: str | None) -> None:
    env = procs.tether_env(db)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, "-m", "tether", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"tether migrate ({pythonpath or 'working tree'}): {out.stderr}")


def backfill(db: Path) -> None:
    """The search rows of what was seeded: migration 0006's own backfill statements."""
    text = MIGRATION.read_text()
    statements = text[text.index("INSERT INTO search_words") :]
    conn = sqlite3.connect(db)
    try:
        conn.executescript(statements)
    finally:
        conn.close()


def prepare(side: Side, workdir: Path, n: dict[int, int], warmup: dict[int, int]) -> None:
    side.db = workdir / f"{side.label}.db"
    migrate(side.db, side.pythonpath)
    seeder = seed.Seeder(side.db)
    for c in LEVELS:
        per_worker = math.ceil((n[c] + warmup[c] + BLOCKS * c) / c / VISITS) + 1
        side.pools[c] = [[f"ba-c{c}-w{w}-{i}" for i in range(per_worker)] for w in range(c)]
        for ids in side.pools[c]:
            for cid in ids:
                seeder.conversation(cid, STORED)
    seeder.close()
    if side.label != "before":  # the schema has the index: it holds the seeded messages
        backfill(side.db)


def bridge(side: Side, c: int) -> Make:
    """The bridge's turn: only the new user message, VISITS turns in a row per conversation."""
    assert side.tether is not None
    url = f"{side.tether.url}/v1/chat/completions"
    pools = side.pools[c]
    turns: defaultdict[int, int] = defaultdict(int)
    counter = iter(range(10**9))

    def make(w: int) -> Req:
        text = f"before/after {side.label} {next(counter)} hello"
        mine = pools[w % len(pools)]
        cid = mine[turns[w] // VISITS % len(mine)]
        turns[w] += 1
        body = orjson.dumps({"model": "scripted", "messages": [{"role": "user", "content": text}]})
        return Req(url, body, {**JSON, "X-Hermes-Session-Id": cid}, text.encode())

    return make


def _cpu(sides: list[Side]) -> dict[str, float]:
    return {s.label: procs.cpu_seconds(s.tether.pid) for s in sides if s.tether is not None}


async def measure(
    sides: list[Side], upstream: procs.Upstream, out: BeforeAfter, warmup: dict[int, int]
) -> None:
    """Per level: warm-up, then the blocks. A server's CPU per turn is all the CPU its process
    used from the first block to SETTLE s after the last (its background work included: the
    search backlog's drains, which may run while another server's block is on) ÷ its turns."""
    client = load.client()
    try:
        for c in LEVELS:
            makes = {s.label: bridge(s, c) for s in sides}
            for s in sides:  # warm-up, not counted
                upstream.reset()
                await load._phase(client, makes[s.label], c, warmup[c], 10.0, False, None)
            await asyncio.sleep(SETTLE)  # the warm-up's background work done before counting
            merged = {s.label: Result(f"{s.label}: bridge turn, stored {STORED}", c, False)
                      for s in sides}  # fmt: skip
            per_block = max(1, out.n[c] // BLOCKS)
            cpu0 = _cpu(sides)
            for block in range(BLOCKS):
                order = sides if block % 2 == 0 else sides[::-1]
                for s in order:
                    assert s.tether is not None
                    upstream.reset()
                    part = Result(s.label, c, False)
                    monitor = Monitor({"tether": s.tether.pid, "upstream": upstream.pid}, None)
                    monitor.start()
                    part.elapsed = await load._phase(
                        client, makes[s.label], c, per_block, 10.0, False, part
                    )
                    await monitor.stop(part)
                    r = merged[s.label]
                    r.n += part.n
                    r.errors += part.errors
                    r.first_error = r.first_error or part.first_error
                    r.elapsed += part.elapsed
                    r.lat_ms += part.lat_ms
                    r.foreign_cores += part.foreign_cores * part.elapsed
            await asyncio.sleep(SETTLE)
            cpu1 = _cpu(sides)
            for label, r in merged.items():
                if r.n:
                    r.cpu_ms_per_req = {"tether": (cpu1[label] - cpu0[label]) * 1000 / r.n}
                r.foreign_cores = r.foreign_cores / r.elapsed if r.elapsed else 0.0
                out.results[(label, c)] = r
                print(f"{r.line()}  Tether CPU {r.cpu_ms_per_req.get('tether', 0):.3f} ms/turn")
            print(
                f"  CPU per turn at c={c}: after ÷ before {out.ratio(c):.3f}, FTS5 writes off "
                f"÷ before {out.ratio(c, 'noindex'):.3f}, after ÷ FTS5 writes off "
                f"{out.ratio(c, 'after', 'noindex'):.3f}",
                flush=True,
            )
    finally:
        await client.aclose()


def run(workdir: Path, quick: bool = False) -> BeforeAfter:
    n = {1: 200, 8: 400} if quick else {1: 2000, 8: 4000}
    warmup = {1: 20, 8: 40} if quick else {1: 100, 8: 200}
    out = BeforeAfter(n)
    sides = [Side("after", None), Side("before", str(checkout())), Side("noindex", stub(workdir))]
    for s in sides:
        s.imported, has_index, stubbed = which_code(s.pythonpath)
        out.imported[s.label] = (
            f"{s.imported} (tether.store.sqlite_search: {'present' if has_index else 'absent'}"
            + ("; index_messages a no-op)" if stubbed else ")")
        )
        expected = {"after": (True, False), "before": (False, False), "noindex": (True, True)}
        if (has_index, stubbed) != expected[s.label]:
            out.error = f"{s.label} imports the wrong code: {out.imported[s.label]}"
            return out
    t0 = time.perf_counter()
    for s in sides:
        prepare(s, workdir, n, warmup)
    out.seeded_s = time.perf_counter() - t0
    upstream = procs.Upstream()
    try:
        for s in sides:
            assert s.db is not None
            s.tether = procs.Tether(s.db, upstream.base_url)
            s.tether.env.pop("PYTHONPATH", None)
            if s.pythonpath:
                s.tether.env["PYTHONPATH"] = s.pythonpath
            s.tether.start()
        asyncio.run(measure(sides, upstream, out, warmup))
    finally:
        for s in sides:
            if s.tether is not None:
                s.tether.stop()
        upstream.close()
    return out


def target_line(r: BeforeAfter) -> list[str]:
    if r.error:
        return [f"N/A   chat turns with the search index: not measured ({r.error})"]
    lines = []
    for c in LEVELS:
        a, b = r.results.get(("after", c)), r.results.get(("before", c))
        if a is None or b is None or not a.n or not b.n:
            lines.append(f"N/A   chat turn CPU with the search index at c={c}: not measured")
            continue
        ratio = r.ratio(c)
        verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
        lines.append(
            f"{verdict}  chat turn CPU with the search index kept up to date, c={c} (bridge, "
            f"stored {STORED}): {a.cpu_ms_per_req['tether']:.3f} ms/turn vs {BEFORE} (before "
            f"the index) {b.cpu_ms_per_req['tether']:.3f} ms: {ratio:.3f}×; "
            f"target ≤ {TARGET_RATIO:.2f}×"
        )
        off = r.results.get(("noindex", c))
        if off is not None and off.n:
            lines.append(
                f"      the working tree with its FTS5 writes off (diagnostic): "
                f"{off.cpu_ms_per_req['tether']:.3f} ms/turn, {r.ratio(c, 'noindex'):.3f}× "
                f"before; the FTS5 writes: {r.ratio(c, 'after', 'noindex'):.3f}×"
            )
    return lines


def table(r: BeforeAfter) -> list[str]:
    out = [
        "| c | code | n | p50 ms | p99 ms | req/s | Tether CPU ms/turn | ÷ before | other load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in LEVELS:
        for label in ("before", "after", "noindex"):
            res = r.results.get((label, c))
            if res is None:
                continue
            ratio = f"{r.ratio(c, label):.3f}×" if label != "before" else "—"
            err = f" ⚠ {res.errors} errors" if res.errors else ""
            out.append(
                f"| {c} | {LABELS[label]}{err} | {res.n} | {res.p(50):.2f} | {res.p(99):.2f} | "
                f"{res.rps:,.0f} | {res.cpu_ms_per_req.get('tether', math.nan):.3f} | {ratio} "
                f"| {res.foreign_cores:.2f} |"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tether-bench-ba-") as tmp:
        r = run(Path(tmp), args.quick)
    for k, v in r.imported.items():
        print(f"{k}: {v}")
    print("\n".join([*table(r), "", *target_line(r)]))


if __name__ == "__main__":
    main()
