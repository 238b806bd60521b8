"""The management rows of `make bench` (issue 16): search over a million stored messages, the
conversation list over 100,000 conversations, the dashboard page of a 10,000-message
conversation, a Hermes import of 100,000 messages, and chat turns against the code before the
search index.

Search, list and page run on one `tether serve` in open mode (no API key: the dashboard needs no
sign-in) over bench/corpus.py's database, c=1, each request timed to its first body byte and
its last (bench/http1.py, GET). The Hermes import is bench/hermes_import.py; the turns
bench/before_after.py.

Run alone: `.venv/bin/python -m bench.run --only manage [--quick]`.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from bench import before_after, corpus, hermes_import, load, procs
from bench.http1 import Client
from bench.load import Make, Monitor, Req, Result

TARGET_SEARCH_P50_MS = 20.0
TARGET_SEARCH_P99_MS = 100.0
TARGET_LIST_P50_MS = 5.0
TARGET_PAGE_TTFB_MS = 100.0
KINDS = ("rare", "mid", "frequent", "phrase", "prefix", "cjk")
KIND_NAMES = {
    "rare": "a rare word (Zipf rank 3,000–5,000)",
    "mid": "a mid-frequency word (rank 100–300)",
    "frequent": "a very frequent word (rank 1–8)",
    "phrase": "two words (rank 95–160 each)",
    "prefix": "a prefix (4 letters + *)",
    "cjk": "a CJK phrase (two 2-character words)",
}


def queries() -> dict[str, list[str]]:
    """What a person would type, per kind, from the corpus's own vocabulary (bench/corpus.py):
    8 queries a kind, used in turn."""
    w = corpus.vocabulary()
    cjk = corpus.CJK_WORDS
    return {
        "rare": [w[i] for i in range(3000, 5000, 250)],
        "mid": [w[i] for i in range(100, 300, 25)],
        "frequent": w[:8],
        "phrase": [f"{w[95 + 5 * i]} {w[121 + 5 * i]}" for i in range(8)],
        "prefix": [w[i][:4] + "*" for i in range(160, 360, 25)],
        "cjk": [cjk[i] + cjk[i + 1] for i in range(0, 16, 2)],
    }


@dataclass(frozen=True)
class Sizes:
    conversations: int
    search_n: int  # requests per search kind
    search_s: float  # time cap per kind
    list_n: int
    page_n: int
    hermes_rows: int

    @staticmethod
    def full() -> Sizes:
        return Sizes(100_000, 100, 12.0, 500, 40, 100_000)

    @staticmethod
    def quick() -> Sizes:
        return Sizes(5_000, 16, 3.0, 60, 6, 10_000)


@dataclass
class ManageRun:
    sizes: Sizes
    corpus: corpus.Corpus | None = None
    search: dict[str, Result] = field(default_factory=dict)
    lists: dict[str, Result] = field(default_factory=dict)
    page: Result | None = None
    page_bytes: int = 0
    hermes: hermes_import.HermesRun | None = None
    turns: before_after.BeforeAfter | None = None
    errors: dict[str, str] = field(default_factory=dict)  # a part that could not run → why
    elapsed: float = 0.0

    def overall(self, without: tuple[str, ...] = ()) -> Result:
        """Every search request of the kinds measured (but `without`) as one row, each kind
        weighing alike: a kind that the time cap cut short (the frequent words) has its
        samples repeated to the count of the largest kind, so it is not under-represented."""
        r = Result("all kinds" + (f" but {', '.join(without)}" if without else ""), 1, False)
        kinds = [res for kind, res in self.search.items() if kind not in without and res.n]
        most = max((res.n for res in kinds), default=0)
        for res in kinds:
            reps = max(1, round(most / res.n))
            r.n += res.n
            r.errors += res.errors
            r.elapsed += res.elapsed
            r.lat_ms += res.lat_ms * reps
            r.ttfb_ms += res.ttfb_ms * reps
        return r


def get(url: str, expect: bytes) -> Req:
    return Req(url, b"", {}, expect, "GET")


def cycle(reqs: list[Req]) -> Make:
    at = iter(range(10**9))
    return lambda _w: reqs[next(at) % len(reqs)]


async def _row(
    client: Client, tether: procs.Tether, name: str, make: Make, n: int, max_s: float
) -> Result:
    monitor = Monitor({"tether": tether.pid}, tether.pid)
    return await load.run(
        client,
        name,
        make,
        concurrency=1,
        n=n,
        warmup=max(3, n // 20),
        max_s=max_s,
        stream=True,  # time the first body byte too (the body is checked by `expect`)
        monitor=monitor,
    )


async def measure(tether: procs.Tether, run: ManageRun) -> None:
    s = run.sizes
    base = tether.url
    client = load.client()
    try:
        for kind, qs in queries().items():
            reqs = [get(f"{base}/v1/search?q={quote(q)}", b'"conversation_id"') for q in qs]
            run.search[kind] = await _row(
                client, tether, f"search: {kind}", cycle(reqs), s.search_n, s.search_s
            )
        rng = random.Random(16)
        deep = [f"conv-{rng.randrange(1, s.conversations)}" for _ in range(200)]
        deep = [d for d in deep if d != f"conv-{s.conversations // 2}"]  # that one is solo-0
        topic = corpus.vocabulary()[100 + 7]
        rows = {
            "first": ("first page", [""]),
            "deep": ("a page deep (after = a random conversation)", [f"after={d}" for d in deep]),
            "team": ("metadata[team]=team-7 (1 in 20)", ["metadata%5Bteam%5D=team-7"]),
            "title": (f"q={topic} on the title (1 in 20)", [urlencode({"q": topic})]),
            "solo": ("metadata[team]=solo (1 in all)", ["metadata%5Bteam%5D=solo"]),
        }
        for key, (name, params) in rows.items():
            reqs = [get(f"{base}/v1/conversations?{p}", b'"object":"list"') for p in params]
            n = s.list_n if key != "solo" else max(10, s.list_n // 10)
            run.lists[key] = await _row(client, tether, f"list: {name}", cycle(reqs), n, 5.0)
        page = get(f"{base}/ui/c/{corpus.PAGE_ID}", b"</html>")
        run.page = await _row(client, tether, "dashboard page", cycle([page]), s.page_n, 30.0)
        r = await client.send(*client.request(page.url, b"", {}, "GET"))
        run.page_bytes = len(r.body)
    finally:
        await client.aclose()


def run_all(workdir: Path, quick: bool) -> ManageRun:
    started = time.monotonic()
    run = ManageRun(Sizes.quick() if quick else Sizes.full())
    print("management: the search/list/page database (bench/corpus.py) ...", flush=True)
    every = [q for qs in queries().values() for q in qs]
    try:
        run.corpus = corpus.prepared(workdir, run.sizes.conversations, every)
    except Exception as exc:  # the rest of the section still runs
        run.errors["the management database"] = repr(exc)
    if run.corpus is not None:
        served(run, run.corpus)
    print(f"management: a Hermes import of {run.sizes.hermes_rows:,} messages ...", flush=True)
    try:
        run.hermes = hermes_import.run(run.sizes.hermes_rows, 7)
    except Exception as exc:
        run.errors["Hermes import"] = repr(exc)
    print(f"management: chat turns against {before_after.BEFORE} (before the index) ...")
    try:
        run.turns = before_after.run(workdir, quick)
    except Exception as exc:
        run.errors["turns before/after"] = repr(exc)
    run.elapsed = time.monotonic() - started
    return run


def served(run: ManageRun, c: corpus.Corpus) -> None:
    """Search, list and page rows on their own server over the corpus's copy."""
    how = "reused from the cache" if c.cached else f"seeded in {c.seeded_s:.1f} s"
    print(
        f"  {c.conversations:,} conversations, {c.messages:,} messages, {c.search_rows:,} + "
        f"{c.cjk_rows:,} search rows, {c.mib:.0f} MiB: {how} (copied in {c.copy_s:.1f} s)",
        flush=True,
    )
    upstream = procs.Upstream()
    tether = procs.Tether(c.path, upstream.base_url)
    try:
        tether.start()
        time.sleep(1.0)
        asyncio.run(measure(tether, run))
    except Exception as exc:  # the rest of the section still runs
        run.errors["search, list and page"] = repr(exc)
    finally:
        tether.stop()
        upstream.close()
        if "Traceback" in tether.output():
            run.errors["server"] = "tether logged a traceback: " + tether.output()[-1500:]
    c.path.unlink(missing_ok=True)  # the copy (the cache keeps the original)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def target_lines(run: ManageRun) -> list[str]:
    lines: list[str] = []
    c = run.corpus
    if run.search:
        allr = run.overall()
        ok = allr.p(50) <= TARGET_SEARCH_P50_MS and allr.p(99) <= TARGET_SEARCH_P99_MS
        msgs = f"{c.messages:,}" if c else "?"
        lines.append(
            f"{_verdict(ok)}  search over {msgs} messages (GET /v1/search, c=1, {len(KINDS)} "
            f"kinds of query alike): p50 {allr.p(50):.1f} ms, p99 {allr.p(99):.1f} ms; target "
            f"p50 ≤ {TARGET_SEARCH_P50_MS:g} ms, p99 ≤ {TARGET_SEARCH_P99_MS:g} ms"
        )
        missed = [
            k
            for k, r in run.search.items()
            if r.p(50) > TARGET_SEARCH_P50_MS or r.p(99) > TARGET_SEARCH_P99_MS
        ]
        per = ", ".join(f"{k} {r.p(50):.1f}/{r.p(99):.1f}" for k, r in run.search.items())
        lines.append(f"      per kind p50/p99 ms: {per}")
        if missed:
            lines.append(f"      kinds over the target: {', '.join(missed)}")
            rest = run.overall(tuple(missed))
            if rest.n:
                lines.append(
                    f"      without them: p50 {rest.p(50):.1f} ms, p99 {rest.p(99):.1f} ms"
                )
    else:
        lines.append("N/A   search: not measured")
    targeted = [r for k, r in run.lists.items() if k != "solo"]
    if targeted:
        worst = max(targeted, key=lambda r: r.p(50))
        convs = f"{c.conversations:,}" if c else "?"
        lines.append(
            f"{_verdict(worst.p(50) <= TARGET_LIST_P50_MS)}  GET /v1/conversations over {convs} "
            f"conversations: p50 "
            + ", ".join(f"{r.name.removeprefix('list: ')} {r.p(50):.2f}" for r in targeted)
            + f" ms; target p50 ≤ {TARGET_LIST_P50_MS:g} ms"
        )
        if "solo" in run.lists:
            solo = run.lists["solo"]
            lines.append(f"      a filter matching 1 conversation (scan): p50 {solo.p(50):.1f} ms")
    else:
        lines.append("N/A   conversation list: not measured")
    if run.page is not None and run.page.n:
        p = run.page
        lines.append(
            f"{_verdict(p.ttfb(50) <= TARGET_PAGE_TTFB_MS)}  dashboard page of a "
            f"{corpus.PAGE_MESSAGES:,}-message conversation: first byte p50 {p.ttfb(50):.1f} ms "
            f"(p99 {p.ttfb(99):.1f}), last byte p50 {p.p(50):.0f} ms, "
            f"{run.page_bytes / 2**20:.1f} MiB; target first byte ≤ {TARGET_PAGE_TTFB_MS:g} ms"
        )
    else:
        lines.append("N/A   dashboard page: not measured")
    h = run.hermes
    if h is not None:
        lines.append(
            f"{_verdict(h.ok)}  Hermes import of {h.rows:,} message rows: {h.total_s:.1f} s "
            f"in-process (read {h.read_s:.1f} + write {h.write_s:.1f}), {h.cli_s:.1f} s as "
            f"`tether import hermes`; target < {hermes_import.TARGET_SECONDS:g} s"
        )
    else:
        lines.append(f"N/A   Hermes import: {run.errors.get('Hermes import', 'not measured')}")
    if run.turns is not None:
        lines += before_after.target_line(run.turns)
    else:
        lines.append(f"N/A   turns before/after: {run.errors.get('turns before/after', '?')}")
    return lines


def _f(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:,.2f}"


def _table(rows: list[tuple[str, Result, str]]) -> list[str]:
    out = [
        "| request | n | first byte p50 · p99 ms | p50 ms | p99 ms | max ms | req/s "
        "| Tether CPU ms/req | detail |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r, detail in rows:
        err = f" ⚠ {r.errors} errors: {r.first_error}" if r.errors else ""
        out.append(
            f"| {name}{err} | {r.n} | {_f(r.ttfb(50))} · {_f(r.ttfb(99))} | {_f(r.p(50))} | "
            f"{_f(r.p(99))} | {_f(max(r.lat_ms, default=math.nan))} | {r.rps:,.0f} | "
            f"{_f(r.cpu_ms_per_req.get('tether', math.nan))} | {detail} |"
        )
    return out


def markdown(run: ManageRun) -> str:
    c = run.corpus
    qs = queries()
    out = ["## Managing and searching (issue 16)", ""]
    if c is not None:
        how = (
            f"reused from the temp dir's cache (seeded by an earlier run in {c.seeded_s:.1f} s)"
            if c.cached
            else f"seeded in {c.seeded_s:.1f} s and cached in the temp dir"
        )
        out += [
            f"One `tether serve` in open mode on bench/corpus.py's SQLite file: "
            f"{c.conversations:,} conversations in one tenant ({corpus.MESSAGES_PER_CONV} "
            f"messages each, and one of {corpus.PAGE_MESSAGES:,}), {c.messages:,} messages, "
            f"{c.search_rows:,} rows in `search_words` and {c.cjk_rows:,} in `search_cjk`, "
            f"{c.mib:,.0f} MiB; {how}, copied for the run in {c.copy_s:.1f} s. c=1; each "
            "request timed to its first body byte and its last; *matches* = the index rows "
            "the query's MATCH expression (as Tether builds it) matches, median over the "
            "kind's queries.",
            "",
        ]
    rows = []
    for kind, r in run.search.items():
        counts = sorted(c.matches.get(q, 0) for q in qs[kind]) if c else []
        median = counts[len(counts) // 2] if counts else 0
        shown = ", ".join(f"`{q}`" for q in qs[kind][:3])
        rows.append((KIND_NAMES[kind], r, f"{median:,} matches; e.g. {shown}"))
    if run.search:
        rows.append(("**all kinds alike**", run.overall(), ""))
        out += ["### Search (`GET /v1/search?q=…`, grouped: one hit per conversation)", ""]
        out += [*_table(rows), ""]
    if run.lists:
        out += ["### The list (`GET /v1/conversations`, 20 a page)", ""]
        out += [*_table([(r.name.removeprefix("list: "), r, "") for r in run.lists.values()])]
        out.append("")
    if run.page is not None:
        out += [f"### The dashboard page (`GET /ui/c/{corpus.PAGE_ID}`)", ""]
        detail = (
            f"{corpus.PAGE_MESSAGES:,} messages (a tool call and its result every 10), 2 "
            f"checkpoints; {run.page_bytes / 2**20:.1f} MiB of HTML, streamed"
        )
        out += [*_table([("the transcript page", run.page, detail)]), ""]
    h = run.hermes
    if h is not None:
        out += [
            "### Hermes import (`bench/hermes_import.py`)",
            "",
            f"A synthetic Hermes `state.db` on the fixture's schema: {h.rows:,} message rows in "
            f"{h.sessions} sessions, {h.state_mib:.0f} MiB ("
            + ("reused from the temp dir's cache, " if h.cached else "")
            + f"built in {h.build_s:.1f} s; compression chains, in-place compaction, forks, "
            "tool calls). Imported into a fresh Tether file in-process (`read_hermes`, then "
            "`write_conversations`), then again by the command, a process, into another fresh "
            "file.",
            "",
            "| read s | write s | in-process s | `tether import hermes` s | conversations "
            "| messages | aliases | checkpoints | rows/s |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {h.read_s:.2f} | {h.write_s:.2f} | {h.total_s:.2f} | {h.cli_s:.2f} | "
            f"{h.conversations:,} | {h.messages:,} | {h.aliases:,} | {h.checkpoints:,} | "
            f"{h.rows / h.total_s:,.0f} |",
            "",
        ]
    t = run.turns
    if t is not None:
        out += [
            f"### Chat turns: the search index kept up to date vs {before_after.BEFORE}",
            "",
            f"`bench/before_after.py`: three servers, each on its own file (seeded in "
            f"{t.seeded_s:.1f} s), bridge turns on stored {before_after.STORED}-message "
            f"conversations, {before_after.BLOCKS} alternating blocks per level. Before: "
            f"{t.imported.get('before', '—')}; after: {t.imported.get('after', '—')}; the "
            "third, a diagnostic (no target): the working tree with its FTS5 writes "
            f"(`sqlite_search.index_messages`) a no-op, {t.imported.get('noindex', '—')}. "
            "Tether CPU per turn: all the CPU of the server's process (/proc) from the first "
            f"block to {before_after.SETTLE:g} s after the last (background indexing "
            "included) ÷ its turns.",
            "",
        ]
        out += [*(before_after.table(t) if not t.error else [f"Not measured: {t.error}"]), ""]
    for part, why in run.errors.items():
        out.append(f"- {part}: not measured or failed: {why}")
    out += ["```", *target_lines(run), "```", ""]
    out.append(f"The section took {run.elapsed:.0f} s.")
    return "\n".join(out) + "\n"
