"""RESULTS.md: the machine, every figure (p50/p99, req/s), Tether/direct ratios, the targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.compaction import CompactionRun
from bench.load import Result

STORED = 200
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_RPS = 2000.0
TARGET_SCALE_RATIO = 1.20
TARGET_RSS_MIB = 120.0
TARGET_FULL_HISTORY_CPU = 1.25  # full-history CPU per turn ÷ the bridge pattern's
TARGET_LOOKUP_MS = 1.0  # id-less p50 − named p50 on the lookup database
FULL_HISTORY = (("json", 1), ("json", 8), ("sse", 8))


@dataclass
class Run:
    res: dict[str, Result]
    rss: dict[str, float]
    cold: dict[str, float]
    compactions: dict[int, list[CompactionRun]]
    machine: dict[str, str]
    date: str
    elapsed: float
    counts: dict[str, int]
    seeded_s: float
    n: dict[int, int]
    load_before: float
    quick: bool = False
    lookup: dict[str, Any] = field(default_factory=dict)  # the lookup database's figures
    # sections measured apart (bench/manage.py): their target lines join the Targets block,
    # their markdown follows the suite's own sections
    sections: list[tuple[list[str], str]] = field(default_factory=list)


def f(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:,.{digits}f}"


def _ok(r: Result | None) -> bool:
    return r is not None and not r.skipped and r.n > 0


def _cpu(r: Result) -> str:
    c = r.cpu_ms_per_req
    return " / ".join(f(c.get(k), 2) for k in ("tether", "upstream", "loadgen"))


def _err(r: Result) -> str:
    return f" ⚠ {r.errors} errors" if r.errors else ""


def latency_table(res: dict[str, Result], kind: str, levels: Sequence[int]) -> list[str]:
    stream = kind == "sse"
    head = (
        "| c | request | n | p50 ms | p99 ms | req/s | ratio p50 · p99 · req/s "
        "| added p50 · p99 ms |"
    )
    if stream:
        head = (
            "| c | request | n | TTFB p50 | TTFB p99 | total p50 | total p99 | req/s "
            "| ratio total p50 · p99 · req/s | added TTFB p50 · total p50 · total p99 ms |"
        )
    cols = head.count("|") - 1
    head += " CPU ms/req tether / upstream / loadgen | other load |"
    out = [head, "|" + "---|" * (cols + 2)]
    pairs = [("direct-1", None), ("tether-new", "direct-1")]
    pairs += [(f"direct-{STORED + 1}", None), (f"tether-s{STORED}", f"direct-{STORED + 1}")]
    for c in levels:
        for key, base_key in pairs:
            r = res.get(f"{key}-{kind}-c{c}")
            if r is None:
                continue
            if r.skipped:
                out.append(f"| {c} | {r.name} | skipped: {r.skipped} |" + " |" * (cols - 1))
                continue
            b = res.get(f"{base_key}-{kind}-c{c}") if base_key else None
            ratio = added = "—"
            if _ok(b) and b is not None:
                ratio = f"{r.p(50) / b.p(50):.2f} · {r.p(99) / b.p(99):.2f} · {r.rps / b.rps:.2f}"
                if stream:
                    added = (
                        f"{f(r.ttfb(50) - b.ttfb(50))} · {f(r.p(50) - b.p(50))} · "
                        f"{f(r.p(99) - b.p(99))}"
                    )
                else:
                    added = f"{f(r.p(50) - b.p(50))} · {f(r.p(99) - b.p(99))}"
            if stream:
                figures = (
                    f"{f(r.ttfb(50))} | {f(r.ttfb(99))} | {f(r.p(50))} | {f(r.p(99))} | "
                    f"{f(r.rps, 0)}"
                )
            else:
                figures = f"{f(r.p(50))} | {f(r.p(99))} | {f(r.rps, 0)}"
            out.append(
                f"| {c} | {r.name}{_err(r)} | {r.n} | {figures} | {ratio} | {added} | {_cpu(r)} "
                f"| {r.foreign_cores:.2f} |"
            )
    return out


def history_table(res: dict[str, Result], levels: Sequence[int]) -> list[str]:
    out = [
        "| c | stored messages | direct p50 · p99 ms | Tether p50 · p99 ms | added p50 · p99 ms "
        "| ratio p50 | direct req/s | Tether req/s | Tether CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in levels:
        for label, t_key, d_key in (
            ("none (new conversation)", "tether-new", "direct-1"),
            ("20", "tether-s20", "direct-21"),
            (str(STORED), f"tether-s{STORED}", f"direct-{STORED + 1}"),
            ("1,000", "tether-s1000", "direct-1001"),
        ):
            t, d = res.get(f"{t_key}-json-c{c}"), res.get(f"{d_key}-json-c{c}")
            if not (_ok(t) and _ok(d)) or t is None or d is None:
                out.append(f"| {c} | {label} | not measured | | | | | | |")
                continue
            out.append(
                f"| {c} | {label}{_err(t)} | {f(d.p(50))} · {f(d.p(99))} | {f(t.p(50))} · "
                f"{f(t.p(99))} | {f(t.p(50) - d.p(50))} · {f(t.p(99) - d.p(99))} | "
                f"{t.p(50) / d.p(50):.2f} | {f(d.rps, 0)} | {f(t.rps, 0)} | "
                f"{f(t.cpu_ms_per_req.get('tether'))} |"
            )
    return out


def scale_table(res: dict[str, Result]) -> list[str]:
    base = res.get("scale-10")
    out = [
        "| stored messages | model's view at start | n | p50 ms | p99 ms | p50 vs 10 msgs "
        "| Tether CPU ms/req | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    views = {
        "scale-10": "10 messages",
        "scale-10000": "summary + 10 messages",
        "scale-100000": "summary + 10 messages",
        "scale-raw-100000": "all 100,000 messages",
    }
    for key, view in views.items():
        r = res.get(key)
        if r is None:
            continue
        if not _ok(r):
            out.append(f"| {r.name} | {view} | skipped: {r.skipped} | | | | | |")
            continue
        ratio = f"{r.p(50) / base.p(50):.2f}×" if _ok(base) and base is not None else "—"
        out.append(
            f"| {r.name}{_err(r)} | {view} | {r.n} | {f(r.p(50))} | {f(r.p(99))} | {ratio} | "
            f"{f(r.cpu_ms_per_req.get('tether'))} | {f(r.rss_peak_mib, 0)} |"
        )
    return out


def full_history_table(res: dict[str, Result]) -> list[str]:
    out = [
        "| c | kind | client | n | p50 ms | p99 ms | req/s | Tether CPU ms/turn "
        "| CPU ÷ bridge | other load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, c in FULL_HISTORY:
        bridge = res.get(f"tether-s{STORED}-{kind}-c{c}")
        for label, r in (
            ("bridge: the new message + X-Hermes-Session-Id", bridge),
            (
                f"full history: {STORED} stored + new, X-Hermes-Session-Id",
                res.get(f"tether-fh{STORED}-{kind}-c{c}"),
            ),
        ):
            if r is None:
                continue
            if not _ok(r):
                out.append(f"| {c} | {kind.upper()} | {label} | skipped: {r.skipped} |" + " |" * 6)
                continue
            ratio = "—"
            if r is not bridge and _ok(bridge) and bridge is not None:
                ratio = f"{_cpu_ratio(r, bridge):.2f}×"
            out.append(
                f"| {c} | {kind.upper()} | {label}{_err(r)} | {r.n} | {f(r.p(50))} | "
                f"{f(r.p(99))} | {f(r.rps, 0)} | {f(r.cpu_ms_per_req.get('tether'))} | {ratio} "
                f"| {r.foreign_cores:.2f} |"
            )
    return out


def _cpu_ratio(r: Result, base: Result) -> float:
    a, b = r.cpu_ms_per_req.get("tether"), base.cpu_ms_per_req.get("tether")
    return a / b if a and b else math.nan


def lookup_table(res: dict[str, Result]) -> list[str]:
    out = [
        "| request | n | p50 ms | p99 ms | req/s | added p50 · p99 ms | Tether CPU ms/req "
        "| other load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    named = res.get("lookup-named")
    for key in ("lookup-named", "lookup-idless"):
        r = res.get(key)
        if r is None:
            continue
        if not _ok(r):
            out.append(f"| {r.name} | skipped: {r.skipped} |" + " |" * 6)
            continue
        added = "—"
        if r is not named and _ok(named) and named is not None:
            added = f"{f(r.p(50) - named.p(50))} · {f(r.p(99) - named.p(99))}"
        out.append(
            f"| {r.name}{_err(r)} | {r.n} | {f(r.p(50))} | {f(r.p(99))} | {f(r.rps, 0)} | "
            f"{added} | {f(r.cpu_ms_per_req.get('tether'))} | {r.foreign_cores:.2f} |"
        )
    return out


def compaction_table(runs: dict[int, list[CompactionRun]]) -> list[str]:
    out = [
        "| conversation | messages | kind | bookkeeping ms p50 (min–max) | compact() wall ms p50 "
        "| summariser ms p50 (calls) | tokens before → after | saved | summarised msgs "
        "| ledger entries |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, rs in runs.items():
        if not rs:
            continue
        bk = [r.bookkeeping_ms for r in rs]
        out.append(
            f"| {size:,} tokens (×{len(rs)}) | {rs[0].messages:,} | {rs[0].kind} | "
            f"{f(statistics.median(bk), 1)} ({f(min(bk), 1)}–{f(max(bk), 1)}) | "
            f"{f(statistics.median(r.wall_ms for r in rs), 1)} | "
            f"{f(statistics.median(r.llm_ms for r in rs), 1)} ({rs[0].summariser_calls}) | "
            f"{statistics.median(r.tokens_before for r in rs):,.0f} → "
            f"{statistics.median(r.tokens_after for r in rs):,.0f} "
            f"(−{statistics.median(r.tokens_before - r.tokens_after for r in rs):,.0f}) | "
            f"{statistics.median(r.saved for r in rs) * 100:.1f}% | "
            f"{statistics.median(r.summarised for r in rs):,.0f} | "
            f"{statistics.median(r.ledger for r in rs):,.0f} |"
        )
    return out


def _main_rss(res: dict[str, Result]) -> tuple[float | None, str]:
    peaks = [
        (r.rss_peak_mib, r)
        for k, r in res.items()
        if k.startswith(("tether-new-", f"tether-s{STORED}-")) and _ok(r) and r.rss_peak_mib
    ]
    if not peaks:
        return None, ""
    peak, r = max(peaks, key=lambda p: p[0] or 0)
    return peak, f"{r.name}, c={r.concurrency}, {'SSE' if r.stream else 'JSON'}"


def targets(
    res: dict[str, Result], rss: dict[str, float], lookup: dict[str, Any] | None = None
) -> list[str]:
    lines = []

    def line(ok: bool | None, text: str) -> None:
        lines.append(f"{'PASS' if ok else 'FAIL' if ok is not None else 'N/A '}  {text}")

    def info(text: str) -> None:
        lines.append(f"      {text}")

    for c, q, limit in ((1, 50, TARGET_ADDED_P50_MS), (8, 99, TARGET_ADDED_P99_MS)):
        t, d = res.get(f"tether-s{STORED}-json-c{c}"), res.get(f"direct-{STORED + 1}-json-c{c}")
        if _ok(t) and _ok(d) and t is not None and d is not None:
            added = t.p(q) - d.p(q)
            line(
                added <= limit,
                f"added latency p{q} at c={c} (stored {STORED}, JSON): {added:.2f} ms "
                f"(Tether {t.p(q):.2f} − direct {d.p(q):.2f}); target ≤ {limit:g} ms",
            )
        else:
            line(None, f"added latency p{q} at c={c}: not measured")
    t, d = res.get(f"tether-s{STORED}-json-c32"), res.get(f"direct-{STORED + 1}-json-c32")
    if _ok(t) and t is not None:
        line(
            t.rps >= TARGET_RPS,
            f"throughput at c=32 (stored {STORED}, JSON): {t.rps:,.0f} req/s; "
            f"target ≥ {TARGET_RPS:,.0f} req/s",
        )
        cpu = t.cpu_ms_per_req.get("tether")
        if cpu:
            info(
                f"Tether spent {cpu:.2f} ms CPU per turn: even with a core to itself that caps "
                f"one process at ~{1000 / cpu:,.0f} req/s"
            )
        if _ok(d) and d is not None:
            info(
                f"direct to the upstream, same shape, same harness: {d.rps:,.0f} req/s "
                "(what this machine and load generator reach without Tether)"
            )
    else:
        line(None, "throughput at c=32: not measured")
    a, b = res.get("scale-100000"), res.get("scale-10")
    if _ok(a) and _ok(b) and a is not None and b is not None:
        ratio = a.p(50) / b.p(50)
        line(
            ratio <= TARGET_SCALE_RATIO,
            f"100,000-message compacted conversation p50 {a.p(50):.2f} ms vs 10-message "
            f"{b.p(50):.2f} ms: {ratio:.2f}×; target ≤ {TARGET_SCALE_RATIO:.2f}×",
        )
    else:
        line(None, "transcript scale: not measured")
    peak, where = _main_rss(res)
    if peak is not None:
        line(
            peak <= TARGET_RSS_MIB,
            f"RSS under load: peak {peak:.1f} MiB ({where}); target ≤ {TARGET_RSS_MIB:g} MiB",
        )
        first = rss.get("after the first turn after start")
        idle = rss.get("idle after start")
        if first and idle:
            info(f"idle after start {idle:.1f} MiB; after the first turn {first:.1f} MiB")
    else:
        line(None, "RSS under load: not measured")
    for kind, c in FULL_HISTORY:
        fh, br = res.get(f"tether-fh{STORED}-{kind}-c{c}"), res.get(f"tether-s{STORED}-{kind}-c{c}")
        what = f"full-history CPU per turn at c={c} (stored {STORED}, {kind.upper()})"
        if not (_ok(fh) and _ok(br) and fh is not None and br is not None):
            line(None, f"{what}: not measured")
            continue
        ratio = _cpu_ratio(fh, br)
        text = (
            f"{what}: {fh.cpu_ms_per_req.get('tether', math.nan):.2f} ms vs bridge "
            f"{br.cpu_ms_per_req.get('tether', math.nan):.2f} ms: {ratio:.2f}×"
        )
        if kind == "json":
            line(ratio <= TARGET_FULL_HISTORY_CPU, f"{text}; target ≤ {TARGET_FULL_HISTORY_CPU}×")
        else:
            info(text)
    lookup = lookup or {}
    if "forks" in lookup:
        info(f"conversations forked in the main database: {lookup['forks']} (expected 0)")
    idless, named = res.get("lookup-idless"), res.get("lookup-named")
    convs = lookup.get("conversations", 0)
    if _ok(idless) and _ok(named) and idless is not None and named is not None:
        added = idless.p(50) - named.p(50)
        line(
            added < TARGET_LOOKUP_MS,
            f"prefix lookup on {convs:,} conversations: id-less p50 {idless.p(50):.2f} − named "
            f"p50 {named.p(50):.2f} = {added:.2f} ms added; target < {TARGET_LOOKUP_MS:g} ms",
        )
    else:
        line(None, "prefix lookup: not measured")
    if lookup.get("plan"):
        info(f"lookup plan: {'; '.join(lookup['plan'])}")
    if "new" in lookup:
        info(f"conversations the lookup rows created instead of continuing: {lookup['new']}")
    return lines


def _foreign(res: dict[str, Result]) -> str:
    loads = [(r.foreign_cores, r) for r in res.values() if _ok(r)]
    if not loads:
        return "—"
    mean = statistics.mean(x for x, _ in loads)
    worst, r = max(loads, key=lambda p: p[0])
    return (
        f"{mean:.2f} cores on average over the scenarios, at most {worst:.2f} "
        f"({r.name}, c={r.concurrency}, {'SSE' if r.stream else 'JSON'})"
    )


def render(run: Run) -> tuple[str, list[str]]:
    res, rss, n, machine = run.res, run.rss, run.n, run.machine
    target_lines = targets(res, rss, run.lookup)
    target_lines += [line for lines, _ in run.sections for line in lines]
    peak, where = _main_rss(res)
    md = [
        "# Tether benchmark results",
        "",
        "Written by `make bench` (`bench/run.py`); bench/README.md says how to read it.",
        "Every figure below was measured in this one run.",
        "",
        f"- Date: {run.date}" + (" (QUICK smoke run)" if run.quick else ""),
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']} RAM, "
        f"Linux {machine['kernel']}",
        f"- Python {machine['python']}; Tether commit {machine['commit']}",
        "- Setup: 1 `tether serve` process (uvicorn, uvloop, httptools), SQLite (WAL) on a temp "
        "file, the scripted upstream (`python -m tether.testing.upstream`, answers at once), "
        "and the load generator (asyncio + uvloop, keep-alive HTTP/1.1 connections parsed with "
        "httptools, `bench/http1.py`): three processes on "
        "the same cores, loopback only.",
        f"- Requests per measured scenario: up to {n[1]} / {n[8]} / {n[32]} at c=1 / 8 / 32, "
        "each capped in time, after warm-up requests that are not counted.",
        f"- Seeded {run.counts['conversations']:,} conversations, "
        f"{run.counts['messages']:,} messages in {run.seeded_s:.1f} s; the suite took "
        f"{run.elapsed:.0f} s.",
        f"- Other load on the machine (CPU of processes outside the benchmark): load average "
        f"{run.load_before:.2f} before the run; {_foreign(res)}.",
        "",
        "## Targets",
        "",
        "1 server process, SQLite, stored conversation of 200 messages, non-streaming; "
        "added = Tether − direct at the same percentile, same request shape (the direct request "
        "carries the 200 stored messages + the new one, which is what Tether sends upstream).",
        "",
        "```",
        *target_lines,
        "```",
        "",
        "## Direct vs Tether, non-streaming",
        "",
        "ratio = Tether ÷ the direct row above it (same shape); added = Tether − direct, ms. "
        "CPU ms/req = CPU time each process spent per measured request; other load = CPU "
        "(in cores) used meanwhile by processes outside the benchmark.",
        "",
        *latency_table(res, "json", (1, 8, 32)),
        "",
        "## Direct vs Tether, streaming (SSE)",
        "",
        "TTFB = time to the first body byte; total = to the last byte ([DONE]).",
        "",
        *latency_table(res, "sse", (1, 8, 32)),
        "",
        "## Stored history size (non-streaming)",
        "",
        "Tether gets only the new user message (`X-Hermes-Session-Id`); the direct request "
        "carries the whole history, as a client without Tether would send it.",
        "",
        *history_table(res, (1, 8)),
        "",
        "## Transcript scale (c=1, non-streaming)",
        "",
        "Seeded conversations; 'compacted' ones hold a checkpoint covering all but the last 10 "
        "messages. Requests go round robin over 3 conversations of each size, so each view "
        "grows by 2 messages per turn in every row alike. The uncompacted 100,000-message row "
        "sends `X-Tether-Compaction: off`: Tether reads, renders and sends the whole transcript "
        "(that is what compaction exists to avoid).",
        "",
        *scale_table(res),
        "",
        "## Cold start",
        "",
        "| request (new conversation, JSON) | latency ms |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in run.cold.items()),
        "",
        "## Full-history clients vs bridge (stored 200)",
        "",
        "The same turn sent two ways, side by side: the bridge sends only the new user message "
        "with `X-Hermes-Session-Id`; the full-history client resends the whole history as it "
        "sees it (the seeded 200 messages, then each earlier turn's user message and answer) "
        "plus the new message, naming the conversation. Both on their own seeded conversations "
        "(transcript hash set, as Tether writes it), 5 turns in a row each. CPU ÷ bridge = "
        "Tether's CPU per turn ÷ the bridge row's, same c and kind.",
        "",
        *full_history_table(res),
        "",
        f"## Prefix lookup on {run.lookup.get('conversations', 0):,} conversations "
        "(c=1, non-streaming)",
        "",
        "A second `tether serve` on its own SQLite file (seeded with "
        f"{run.lookup.get('conversations', 0):,} conversations of 4 distinct messages each in "
        f"{f(run.lookup.get('seeded_s'), 1)} s, {f(run.lookup.get('mib'), 0)} MiB), after the "
        "main server stopped. Every request resends one conversation's 4 messages + a new one, a "
        "fresh conversation each time (both rows miss the view cache): naming it, or with no id "
        "(Tether probes the (tenant, history_hash) index); the two rows ran in 10 alternating "
        "blocks. added = no id − named. SQLite's plan "
        f"for the lookup: {'; '.join(run.lookup.get('plan', [])) or '—'}.",
        "",
        *lookup_table(res),
        "",
        "## Compaction bookkeeping (in-process, LLM excluded)",
        "",
        "`tether.engine.compact.compact()` on a real SqliteStore with a summariser that answers "
        "at once; the conversation has just crossed the compaction limit (window chosen so "
        "the limit is 90% of its size). bookkeeping = checkpoint `stats['ms']` (Tether's work "
        "without the summariser call); summariser ms = `stats['llm_ms']`, the time spent "
        "waiting on the summariser (≈0 here); wall = the whole call incl. the checkpoint "
        "commit. Building and redacting the summariser requests and the identifier ledger run "
        "in worker threads, off the event loop; the cut and the estimates run on it.",
        "",
        *compaction_table(run.compactions),
        "",
        "## Memory (RSS of the tether process)",
        "",
        "| when | RSS MiB |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in rss.items()),
        f"| peak under main load ({where}) | {f(peak, 1)} |",
        *(
            f"| peak during {r.name}, c={r.concurrency}, {'SSE' if r.stream else 'JSON'} | "
            f"{f(r.rss_peak_mib, 1)} |"
            for k, r in res.items()
            if k.startswith("tether") and _ok(r)
        ),
        "",
        *(text for _, text in run.sections),
    ]
    return "\n".join(md), target_lines


def render_sections(
    sections: list[tuple[list[str], str]],
    machine: dict[str, str],
    date: str,
    elapsed: float,
    load_before: float,
    quick: bool,
) -> tuple[str, list[str]]:
    """A results file holding only sections measured apart (`python -m bench.run --only …`)."""
    target_lines = [line for lines, _ in sections for line in lines]
    md = [
        "# Tether benchmark results (part of the suite)",
        "",
        "Written by `python -m bench.run --only …`; bench/README.md says how to read it.",
        "",
        f"- Date: {date}" + (" (QUICK smoke run)" if quick else ""),
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']} RAM, "
        f"Linux {machine['kernel']}",
        f"- Python {machine['python']}; Tether commit {machine['commit']}",
        f"- Load average {load_before:.2f} before the run; the run took {elapsed:.0f} s.",
        "",
        "## Targets",
        "",
        "```",
        *target_lines,
        "```",
        "",
        *(text for _, text in sections),
    ]
    return "\n".join(md), target_lines
