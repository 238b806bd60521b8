"""`make bench`: Tether against the scripted upstream, direct vs through Tether, on loopback.

    .venv/bin/python -m bench.run            # the whole suite, writes bench/RESULTS.md
    .venv/bin/python -m bench.run --quick    # a smoke run (few requests), results to the temp dir
    .venv/bin/python -m bench.run --only manage   # issue 16's rows alone, to the temp dir
    .venv/bin/python -m bench.run --only responses   # issue 17's Responses vs chat rows alone

See bench/README.md for what is measured and how to read the results.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import compaction, hardening, load, manage, procs, report, responses, seed, tools
from bench.load import Make, Monitor, Req, Result

BUDGET_S = 540.0  # the whole suite stays under 10 minutes; later scenarios are skipped past this
LEVELS = (1, 8, 32)
HISTORY_LEVELS = (1, 8)
STORED = 200  # the stored conversation the targets are defined on
HISTORIES = (20, 1000)
SCALE = (10, 10_000, 100_000)
SCALE_CONVS = 3  # conversations per transcript size, used round robin
GROWTH = 0.05  # a pooled conversation grows by at most ~5% (2 messages a turn)
FULL_HISTORY = (("json", 1), ("json", 8), ("sse", 8))  # full-history rows beside stored 200
LOOKUP_SIZE = 4  # messages in each conversation of the lookup database
LOOKUP_BLOCKS = 10  # the two lookup rows run in alternating blocks (A B A B …)


@dataclass(frozen=True)
class Params:
    n: dict[int, int]
    warmup: dict[int, int]
    max_s: float
    scale_n: int
    raw_n: int
    lookup_convs: int = 100_000  # conversations in the lookup database (its own file)

    @staticmethod
    def full() -> Params:
        return Params({1: 1000, 8: 2000, 32: 3000}, {1: 50, 8: 100, 32: 200}, 6.0, 200, 3)

    @staticmethod
    def quick() -> Params:
        return Params({1: 40, 8: 120, 32: 240}, {1: 5, 8: 16, 32: 64}, 2.0, 15, 1, 5_000)


@dataclass
class Suite:
    params: Params
    tether: procs.Tether
    upstream: procs.Upstream
    pools: dict[str, list[list[str]]]
    started: float
    results: dict[str, Result] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)
    cold: dict[str, float] = field(default_factory=dict)
    counter: int = 0
    db: Path | None = None  # the main database (read for checks while the server runs)
    lookup: dict[str, Any] = field(default_factory=dict)  # the lookup database's figures

    def remaining(self) -> float:
        return BUDGET_S - (time.monotonic() - self.started)

    def text(self) -> str:
        self.counter += 1
        return f"bench request {self.counter} hello"


def _body(messages: list[dict[str, Any]], stream: bool) -> bytes:
    body: dict[str, Any] = {"model": "scripted", "messages": messages}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


JSON = {"Content-Type": "application/json"}


def direct(suite: Suite, history: int, stream: bool) -> Make:
    """Straight to the upstream, carrying what Tether would send it: history + the new message."""
    url = f"{suite.upstream.base_url}/chat/completions"
    prefix = seed.openai_messages(history)

    def make(w: int) -> Req:
        text = suite.text()
        body: dict[str, Any] = {"model": "scripted", "messages": [*prefix, user(text)]}
        if stream:  # Tether asks its upstream for usage on streams; so does this
            body.update(stream=True, stream_options={"include_usage": True})
        return Req(url, orjson.dumps(body), JSON, b"" if stream else text.encode())

    return make


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def through(suite: Suite, pool: str | None, stream: bool, visits: int = 1, **headers: str) -> Make:
    """Through Tether, bridge style: only the new user message, the conversation in a header.
    pool None: no conversation (Tether starts a new one per request). Each worker sends
    `visits` turns in a row to one of its conversations, then moves on to the next, as a
    person chatting does."""
    url = f"{suite.tether.url}/v1/chat/completions"
    convs = suite.pools[pool] if pool else None
    turns: defaultdict[int, int] = defaultdict(int)

    def make(w: int) -> Req:
        text = suite.text()
        h = {**JSON, **headers}
        if convs is not None:
            mine = convs[w % len(convs)]
            h["X-Hermes-Session-Id"] = mine[turns[w] // visits % len(mine)]
            turns[w] += 1
        return Req(url, _body([user(text)], stream), h, b"" if stream else text.encode())

    return make


def replay(suite: Suite, pool: str, stream: bool, visits: int, size: int = STORED) -> Make:
    """Through Tether, full-history style: the whole history as the client sees it (the seeded
    transcript, then each turn's user message and the upstream's answer, `echo: <text>`) plus
    the new user message, naming the conversation. Visits as `through()`: each worker owns its
    conversations, so turns on one are serialised and each request's history is current.
    A JSON response must name the conversation (a fork would be a new id)."""
    url = f"{suite.tether.url}/v1/chat/completions"
    convs = suite.pools[pool]
    prefix = seed.openai_messages(size)
    histories: dict[str, list[dict[str, Any]]] = {}
    turns: defaultdict[int, int] = defaultdict(int)
    sent: dict[int, tuple[str, str]] = {}  # worker → its previous request (answered by now)

    def make(w: int) -> Req:
        if w in sent:
            cid, said = sent.pop(w)
            histories[cid] += [user(said), {"role": "assistant", "content": "echo: " + said}]
        mine = convs[w % len(convs)]
        cid = mine[turns[w] // visits % len(mine)]
        turns[w] += 1
        history = histories.setdefault(cid, list(prefix))
        text = suite.text()
        sent[w] = (cid, text)
        h = {**JSON, "X-Hermes-Session-Id": cid}
        expect = b"" if stream else f'"conversation_id":"{cid}"'.encode()
        return Req(url, _body([*history, user(text)], stream), h, expect)

    return make


def lookup(suite: Suite, numbers: list[int], named: bool) -> Make:
    """Full-history requests on the lookup database's distinct conversations, a fresh one per
    request (neither row finds it in the view cache): its LOOKUP_SIZE messages + a new user
    message, naming the conversation or not (then Tether finds it by its transcript hash).
    The response must name that conversation."""
    url = f"{suite.tether.url}/v1/chat/completions"
    todo = iter(numbers)

    def make(w: int) -> Req:
        n = next(todo)
        cid = f"look-{n}"
        h = {**JSON, "X-Hermes-Session-Id": cid} if named else JSON
        body = _body([*seed.distinct_messages(n, LOOKUP_SIZE), user(suite.text())], False)
        return Req(url, body, h, f'"conversation_id":"{cid}"'.encode())

    return make


async def scenario(
    suite: Suite,
    client: Any,
    key: str,
    name: str,
    make: Make,
    c: int,
    stream: bool,
    *,
    n: int | None = None,
    warmup: int | None = None,
    max_s: float | None = None,
    rss: bool = True,
) -> None:
    p = suite.params
    max_s = p.max_s if max_s is None else max_s
    if suite.remaining() < max_s * 2 + 5:
        res = Result(name, c, stream, skipped="time budget of the suite used up")
        print(res.line(), flush=True)
        suite.results[key] = res
        return
    suite.upstream.reset()
    pids = {"tether": suite.tether.pid, "upstream": suite.upstream.pid}
    monitor = Monitor(pids, suite.tether.pid if rss else None)
    suite.results[key] = await load.run(
        client,
        name,
        make,
        concurrency=c,
        n=p.n[c] if n is None else n,
        warmup=p.warmup[c] if warmup is None else warmup,
        max_s=max_s,
        stream=stream,
        monitor=monitor,
    )


def visits_for(size: int) -> int:
    """Turns a conversation of `size` messages gets in the run: it grows by at most GROWTH."""
    return max(1, int(size * GROWTH / 2))


def pool_ids(prefix: str, size: int, c: int, requests: int) -> list[list[str]]:
    """`c` disjoint lists of conversation ids, one per worker, so no two in-flight requests
    share a conversation (turns on one conversation are serialised by design)."""
    turns = visits_for(size)
    per_worker = max(1, math.ceil(requests / c / turns))
    return [[f"{prefix}-w{w}-{i}" for i in range(per_worker)] for w in range(c)]


def seed_all(db: Path, p: Params) -> tuple[dict[str, list[list[str]]], dict[str, int]]:
    pools: dict[str, list[list[str]]] = {}
    sizes: dict[str, int] = {}
    for stream in (False, True):
        for c in LEVELS:
            key = f"s{STORED}-{'sse' if stream else 'json'}-c{c}"
            pools[key] = pool_ids(key, STORED, c, p.n[c] + p.warmup[c])
            sizes[key] = STORED
    for kind, c in FULL_HISTORY:  # full-history clients: conversations of their own
        key = f"fh{STORED}-{kind}-c{c}"
        pools[key] = pool_ids(key, STORED, c, p.n[c] + p.warmup[c])
        sizes[key] = STORED
    for size in HISTORIES:
        for c in HISTORY_LEVELS:
            key = f"s{size}-json-c{c}"
            pools[key] = pool_ids(key, size, c, p.n[c] + p.warmup[c])
            sizes[key] = size
    seeder = seed.Seeder(db)
    for key, workers in pools.items():
        for ids in workers:
            for cid in ids:
                seeder.conversation(cid, sizes[key])
    for size in SCALE:
        key = f"scale-{size}"
        pools[key] = [[f"{key}-{i}" for i in range(SCALE_CONVS)]]
        for cid in pools[key][0]:
            seeder.conversation(cid, size, checkpoint=size > 10)
    pools["raw-100000"] = [["raw-100000"]]
    seeder.conversation("raw-100000", 100_000, checkpoint=False)
    seeder.close()
    counts = {"conversations": sum(len(i) for w in pools.values() for i in w)}
    counts["messages"] = seeder.messages
    return pools, counts


def plan(suite: Suite) -> list[tuple[str, str, Make, int, bool, dict[str, Any]]]:
    """Every measured scenario, in order: (key, name, request maker, concurrency, stream, opts).
    Direct and Tether alternate so that drift on the machine hits both alike."""
    p = suite.params
    out: list[tuple[str, str, Make, int, bool, dict[str, Any]]] = []
    for stream in (False, True):
        kind = "sse" if stream else "json"
        for c in LEVELS:
            out += [
                (f"direct-1-{kind}-c{c}", "direct, 1 msg", direct(suite, 0, stream), c, stream, {}),
                (
                    f"tether-new-{kind}-c{c}",
                    "tether, new conversation",
                    through(suite, None, stream),
                    c,
                    stream,
                    {},
                ),
                (
                    f"direct-{STORED + 1}-{kind}-c{c}",
                    f"direct, {STORED + 1} msgs",
                    direct(suite, STORED, stream),
                    c,
                    stream,
                    {},
                ),
                (
                    f"tether-s{STORED}-{kind}-c{c}",
                    f"tether, stored {STORED}",
                    through(suite, f"s{STORED}-{kind}-c{c}", stream, visits_for(STORED)),
                    c,
                    stream,
                    {},
                ),
            ]
            if (kind, c) in FULL_HISTORY:
                out.append(
                    (
                        f"tether-fh{STORED}-{kind}-c{c}",
                        f"tether, stored {STORED}, full history",
                        replay(suite, f"fh{STORED}-{kind}-c{c}", stream, visits_for(STORED)),
                        c,
                        stream,
                        {},
                    )
                )
    for c in HISTORY_LEVELS:
        for size in HISTORIES:
            name = f"direct, {size + 1} msgs"
            out.append(
                (f"direct-{size + 1}-json-c{c}", name, direct(suite, size, False), c, False, {})
            )
            make = through(suite, f"s{size}-json-c{c}", False, visits_for(size))
            out.append((f"tether-s{size}-json-c{c}", f"tether, stored {size}", make, c, False, {}))
    scale_opts = {"n": p.scale_n, "warmup": max(3, p.scale_n // 10)}
    for size in SCALE:
        name = f"tether, {size:,} msgs ({'no checkpoint' if size == 10 else 'compacted'})"
        make = through(suite, f"scale-{size}", False)
        out.append((f"scale-{size}", name, make, 1, False, scale_opts))
    raw = through(suite, "raw-100000", False, **{"X-Tether-Compaction": "off"})
    raw_opts = {"n": p.raw_n, "warmup": 1, "max_s": 60.0}
    name = "tether, 100,000 msgs (NO checkpoint)"
    out.append(("scale-raw-100000", name, raw, 1, False, raw_opts))
    return out


async def main_async(suite: Suite) -> None:
    client = load.client()
    try:
        # the first turns after start-up, before any warm-up (the first loads the tokenizer)
        url = f"{suite.tether.url}/v1/chat/completions"
        for label in ("first turn after start", "second turn"):
            t0 = time.perf_counter()
            r = await client.post(url, _body([user(suite.text())], False), JSON)
            if r.status != 200:
                raise RuntimeError(f"the first turns failed: HTTP {r.status}: {r.body[:300]!r}")
            suite.cold[label] = (time.perf_counter() - t0) * 1000
            suite.rss[f"after the {label}"] = (procs.rss_bytes(suite.tether.pid) or 0) / procs.MIB
        held: dict[tuple[bool, int], tuple[str, str, Make]] = {}
        for key, name, make, c, stream, opts in plan(suite):
            if key.startswith("direct-21-"):  # the main (stored 200) scenarios are over
                rss = procs.rss_bytes(suite.tether.pid) or 0
                suite.rss.setdefault("after the main scenarios (idle)", rss / procs.MIB)
            kind = "sse" if stream else "json"
            if key == f"tether-s{STORED}-{kind}-c{c}" and (kind, c) in FULL_HISTORY:
                held[(stream, c)] = (key, name, make)  # measured beside its full-history twin
                continue
            if key.startswith("tether-fh") and (stream, c) in held:
                # bridge and full history in alternating blocks: their CPU ratio is the target,
                # and drift between two rows run one after the other moved it by ±0.2
                await alternating(
                    suite, client, [held.pop((stream, c)), (key, name, make)], c, stream
                )
                continue
            await scenario(suite, client, key, name, make, c, stream, **opts)
        rss = procs.rss_bytes(suite.tether.pid) or 0
        suite.rss["after the 100k uncompacted turns (idle)"] = rss / procs.MIB
        if suite.db is not None:  # a full-history turn that forked did not continue its history
            suite.lookup["forks"] = count(suite.db, "forked_from_pk IS NOT NULL")
    finally:
        await client.aclose()


def count(db: Path, where: str) -> int:
    """Conversations in `db` matching `where` (read-only, while the server runs)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM conversations WHERE {where}").fetchone()[0])
    finally:
        conn.close()


def seed_lookup(db: Path, p: Params) -> dict[str, Any]:
    """The lookup database: `p.lookup_convs` distinct conversations, one transaction."""
    t0 = time.perf_counter()
    procs.migrate(db)
    seeder = seed.Seeder(db)
    seeder.distinct("look", p.lookup_convs, LOOKUP_SIZE)
    seeder.close()
    return {
        "conversations": p.lookup_convs,
        "messages": seeder.messages,
        "seeded_s": time.perf_counter() - t0,
        "mib": db.stat().st_size / procs.MIB,
        "plan": seed.lookup_plan(db),
    }


async def alternating(
    suite: Suite,
    client: Any,
    rows: list[tuple[str, str, Make]],
    c: int = 1,
    stream: bool = False,
) -> None:
    """Rows measured in LOOKUP_BLOCKS alternating blocks (A B A B …), so that drift and bursts
    of other work on the machine hit every row alike (their difference, or ratio, is the
    figure); each row's blocks are merged into one result."""
    p = suite.params
    if suite.remaining() < p.max_s * 2 + 5:
        for key, name, _ in rows:
            skipped = Result(name, c, stream, skipped="time budget of the suite used up")
            suite.results[key] = skipped
            print(skipped.line(), flush=True)
        return
    for _, _, make in rows:
        suite.upstream.reset()
        await load._phase(client, make, c, p.warmup[c], p.max_s, stream, None)
    merged = {key: Result(name, c, stream) for key, name, _ in rows}
    cpu: dict[str, defaultdict[str, float]] = {key: defaultdict(float) for key, _, _ in rows}
    foreign: defaultdict[str, float] = defaultdict(float)
    pids = {"tether": suite.tether.pid, "upstream": suite.upstream.pid}
    per_block = max(1, p.n[c] // LOOKUP_BLOCKS)
    for _ in range(LOOKUP_BLOCKS):
        for key, name, make in rows:
            suite.upstream.reset()
            part, monitor = Result(name, c, stream), Monitor(pids, suite.tether.pid)
            monitor.start()
            part.elapsed = await load._phase(
                client, make, c, per_block, p.max_s / LOOKUP_BLOCKS, stream, part
            )
            await monitor.stop(part)
            r = merged[key]
            r.n, r.errors, r.elapsed = (
                r.n + part.n,
                r.errors + part.errors,
                r.elapsed + part.elapsed,
            )
            r.first_error = r.first_error or part.first_error
            r.lat_ms += part.lat_ms
            r.ttfb_ms += part.ttfb_ms
            r.rss_peak_mib = max(r.rss_peak_mib or 0.0, part.rss_peak_mib or 0.0)
            foreign[key] += part.foreign_cores * part.elapsed
            for k, v in part.cpu_ms_per_req.items():
                cpu[key][k] += v * part.n
    for key, r in merged.items():
        if r.n:
            r.cpu_ms_per_req = {k: v / r.n for k, v in cpu[key].items()}
        r.foreign_cores = foreign[key] / r.elapsed if r.elapsed else 0.0
        suite.results[key] = r
        print(r.line(), flush=True)


async def lookup_async(suite: Suite) -> None:
    """c=1, full-history requests on fresh conversations of the lookup database: naming the
    conversation, and with no id (the server probes the (tenant, history_hash) index)."""
    p = suite.params
    per_row = p.n[1] + p.warmup[1]
    numbers = random.Random(11).sample(range(p.lookup_convs), 2 * per_row)
    client = load.client()
    try:
        rows = [
            ("lookup-named", "full history, naming the conversation", True, numbers[::2]),
            ("lookup-idless", "full history, no id (found by hash)", False, numbers[1::2]),
        ]
        await alternating(
            suite, client, [(k, n, lookup(suite, ids, named)) for k, n, named, ids in rows]
        )
        assert suite.lookup.get("db") is not None
        suite.lookup["new"] = count(suite.lookup["db"], "id NOT LIKE 'look-%'")
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (writes to the temp dir, not RESULTS.md)"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: bench/RESULTS.md")
    parser.add_argument(
        "--only",
        choices=["manage", "responses"],
        default=None,
        help="run one part alone (manage: issue 16's search, list, page, Hermes import and "
        "turns before/after; responses: issue 17's Responses turns beside chat turns); "
        "results to the temp dir unless --out",
    )
    args = parser.parse_args()
    params = Params.quick() if args.quick else Params.full()
    started = time.monotonic()
    date = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = procs.loadavg()
    machine = procs.machine()  # the code under test is the code at start (servers load it now)
    if load_before > 0.5:
        print(
            f"note: load average {load_before:.2f} before the run; other work on this machine "
            "skews the figures (RESULTS.md reports it per scenario)",
            flush=True,
        )
    from tether.cli import setup_logging

    setup_logging("warning")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a tether dependency
        pass
    if args.only:
        return only(args, machine, date, load_before, started)
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        workdir = Path(tmp)
        db = workdir / "tether.db"
        print("compaction bookkeeping (in-process) ...", flush=True)
        compactions = asyncio.run(compaction.run_all(workdir))
        for size, runs in compactions.items():
            ms = ", ".join(f"{r.bookkeeping_ms:.1f}" for r in runs)
            print(f"  {size:,} tokens: bookkeeping ms {ms}", flush=True)
        hard = hardening.run_all(workdir, args.quick)
        print("server-side tools (its own server, an MCP server) ...", flush=True)
        tool_rows = tools.run(workdir, n=100 if args.quick else 600)
        print("migrating and seeding ...", flush=True)
        t0 = time.perf_counter()
        procs.migrate(db)
        pools, counts = seed_all(db, params)
        seeded = time.perf_counter() - t0
        print(
            f"  {counts['conversations']} conversations, {counts['messages']:,} messages "
            f"in {seeded:.1f} s ({db.stat().st_size / procs.MIB:.0f} MiB)",
            flush=True,
        )
        lookup_db = workdir / "lookup.db"  # its own file, served by its own process later
        looked = seed_lookup(lookup_db, params)
        print(
            f"  lookup database: {looked['conversations']:,} conversations, "
            f"{looked['messages']:,} messages in {looked['seeded_s']:.1f} s "
            f"({looked['mib']:.0f} MiB); plan: {'; '.join(looked['plan'])}",
            flush=True,
        )
        upstream = procs.Upstream()
        tether = procs.Tether(db, upstream.base_url)
        second = procs.Tether(lookup_db, upstream.base_url)
        try:
            tether.start()
            time.sleep(1.0)
            suite = Suite(params, tether, upstream, pools, started, db=db, lookup=looked)
            suite.rss["idle after start"] = (procs.rss_bytes(tether.pid) or 0) / procs.MIB
            asyncio.run(main_async(suite))
            tether.stop()  # the lookup rows run alone, on their own server and database
            suite.tether = second.start()
            suite.lookup["db"] = lookup_db
            time.sleep(1.0)
            asyncio.run(lookup_async(suite))
        finally:
            tether.stop()
            second.stop()
            upstream.close()
        for proc in (tether, second):
            if "Traceback" in proc.output():
                print("tether logged a traceback:\n" + proc.output()[-3000:], file=sys.stderr)
        # issue 16's rows: servers and databases of their own, after the suite's (own budget)
        managed = manage.run_all(workdir, args.quick)
        # issue 17's rows: a server and a database of their own, last (own budget too)
        answered = responses.run_all(workdir, args.quick)
    elapsed = time.monotonic() - started
    now = procs.machine()["commit"]
    if now != machine["commit"]:
        machine["commit"] += (
            f" (src/ changed during the run, to {now}; measured: the state at start)"
        )
    text, lines = report.render(
        report.Run(
            suite.results,
            suite.rss,
            suite.cold,
            compactions,
            machine,
            date,
            elapsed,
            counts,
            seeded,
            params.n,
            load_before,
            args.quick,
            suite.lookup,
            sections=[
                (manage.target_lines(managed), manage.markdown(managed)),
                (responses.target_lines(answered), responses.markdown(answered)),
            ],
        )
    )
    lines += hardening.target_lines(hard)
    text += "\n" + hardening.markdown(hard)
    lines.append(tools.line(tool_rows))
    text += "\n" + tools.markdown(tool_rows)
    print("\n".join(lines))
    out = args.out or (
        Path(tempfile.gettempdir()) / "tether-bench-quick.md"
        if args.quick
        else procs.ROOT / "bench" / "RESULTS.md"
    )
    out.write_text(text)
    print(f"wrote {out} ({elapsed:.0f} s)")
    return 0


def only(
    args: argparse.Namespace, machine: dict[str, str], date: str, load: float, started: float
) -> int:
    """`--only manage` or `--only responses`: that part alone, its own results file."""
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        if args.only == "responses":
            answered = responses.run_all(Path(tmp), args.quick)
            sections = [(responses.target_lines(answered), responses.markdown(answered))]
        else:
            managed = manage.run_all(Path(tmp), args.quick)
            sections = [(manage.target_lines(managed), manage.markdown(managed))]
    text, lines = report.render_sections(
        sections, machine, date, time.monotonic() - started, load, args.quick
    )
    print("\n".join(lines))
    suffix = "-quick" if args.quick else ""
    out = args.out or Path(tempfile.gettempdir()) / f"tether-bench-{args.only}{suffix}.md"
    out.write_text(text)
    print(f"wrote {out} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
