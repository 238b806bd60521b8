"""Issue 17's benchmark: a Responses turn beside a Chat Completions turn of the same shape
(target: Tether's CPU per turn and the turn's latency p50 within 15% of the chat turn's).

One `tether serve` on its own SQLite file and the scripted upstream. Every Tether row continues
seeded conversations of STORED messages, VISITS turns in a row each (as `make bench`'s
"stored 200" rows: the first of a conversation's turns reads it from SQLite, the next find it in
the view cache), one new user message a turn, every message the same length (so the upstream's
`echo: …` reply is the same size too):

- *chat*: `POST /v1/chat/completions`, the new message in `messages`, the conversation named by
  `X-Tether-Conversation`;
- *responses, previous_response_id*: `POST /v1/responses`, the new message as `input`,
  `previous_response_id` = the id of the conversation's last response (each conversation is
  seeded with a completed turn at its head, so the first visit continues it too; the answer
  must name the same conversation: continuing from the head is no fork);
- *responses, conversation*: the same, naming the conversation (`conversation`) instead: the
  difference to the row above is what resolving `previous_response_id` costs;
- *direct*: the upstream alone, the seeded history + the new message (what Tether sends it), so
  that the latency Tether adds (turn − direct) can be read beside the turn's.

JSON and streamed (SSE), at c=1 and c=8, each row on conversations of its own. The rows of a
(kind, c) run in short blocks, their order going round a balanced Latin square (ORDERS: every
row follows every other row equally often), so that drift and bursts of other work on the
machine hit them alike, and so does work one row's turns leave to the next block (the search
index drains its backlog in the background every 0.5 s: 0.01–0.05 ms of CPU a turn, measured);
each row's blocks are merged. CPU is the Tether process's from /proc over its blocks; latency
is to the last byte of the response (and, streamed, to the first: TTFB).

Run alone: `.venv/bin/python -m bench.run --only responses [--quick]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import load, procs, seed
from bench.http1 import Client, HTTPError
from bench.load import Monitor, Result

STORED = 200  # messages seeded in each conversation
VISITS = 5  # turns in a row on one conversation
LEVELS = (1, 8)
KINDS = ("json", "sse")
TARGET_RATIO = 1.15  # Responses ÷ chat: Tether CPU per turn and latency p50
JSON = {"Content-Type": "application/json"}
ROWS = {
    "direct": "direct (upstream alone, history + 1)",
    "chat": "chat completions (X-Tether-Conversation)",
    "previous": "responses (previous_response_id)",
    "conversation": "responses (conversation)",
}
TETHER_ROWS = ("chat", "previous", "conversation")
# a balanced Latin square over the 4 rows (Williams): each row follows each other row once
ORDERS = ((0, 1, 3, 2), (1, 2, 0, 3), (2, 3, 1, 0), (3, 0, 2, 1))


@dataclass(frozen=True)
class Sizes:
    n: dict[int, int]  # measured turns per row and level (split over the blocks)
    warmup: dict[int, int]
    max_s: float  # cap per row and level (all blocks together)
    blocks: int

    @staticmethod
    def full() -> Sizes:
        return Sizes({1: 1200, 8: 2400}, {1: 60, 8: 120}, 12.0, 20)

    @staticmethod
    def quick() -> Sizes:
        return Sizes({1: 80, 8: 160}, {1: 5, 8: 16}, 2.0, 4)


@dataclass
class ResponsesRun:
    sizes: Sizes
    results: dict[tuple[str, int, str], Result] = field(default_factory=dict)  # (kind, c, row)
    seeded_s: float = 0.0
    conversations: int = 0
    messages: int = 0
    mib: float = 0.0
    error: str | None = None
    elapsed: float = 0.0

    def get(self, kind: str, c: int, row: str) -> Result | None:
        r = self.results.get((kind, c, row))
        return r if r is not None and r.n else None


def head_turn(cid: str) -> str:
    """The id of the completed turn seeded at conversation `cid`'s head."""
    return "turn_" + hashlib.md5(cid.encode()).hexdigest()


def response_of(turn: str) -> str:
    return "resp_" + turn.removeprefix("turn_")


def pools(sizes: Sizes) -> dict[tuple[str, int, str], list[list[str]]]:
    """Per (kind, c, Tether row): `c` disjoint lists of conversation ids, one per worker."""
    out: dict[tuple[str, int, str], list[list[str]]] = {}
    for kind in KINDS:
        for c in LEVELS:
            turns = sizes.n[c] + sizes.warmup[c] + sizes.blocks * c
            per_worker = math.ceil(turns / c / VISITS) + 2
            for row in TETHER_ROWS:
                out[(kind, c, row)] = [
                    [f"r17-{kind}-c{c}-{row}-w{w}-{i}" for i in range(per_worker)] for w in range(c)
                ]
    return out


def seed_all(db: Path, convs: dict[tuple[str, int, str], list[list[str]]]) -> tuple[int, int]:
    """Every conversation of `convs`, STORED messages each, and a completed turn at its head
    (what `previous_response_id` names; its last_seq is the conversation's)."""
    seeder = seed.Seeder(db)
    count = 0
    for workers in convs.values():
        for ids in workers:
            for cid in ids:
                pk = seeder.conversation(cid, STORED)
                seeder.conn.execute(
                    "INSERT INTO turns (id, conversation_pk, status, model, stream, first_seq, "
                    "last_seq, started_at, first_token_at, finished_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        head_turn(cid),
                        pk,
                        "completed",
                        "scripted",
                        0,
                        STORED - 1,
                        STORED,
                        seeder.now,
                        seeder.now,
                        seeder.now,
                    ),
                )
                count += 1
    seeder.close()
    return count, seeder.messages


Check = Callable[[bytes], str]  # the response body → an error, or ""


class Row:
    """The requests of one row at one (kind, c): each worker owns its conversations and sends
    each VISITS turns in a row; a Responses row keeps each conversation's last response id
    (from the answer) for the next turn's `previous_response_id`."""

    texts = itertools.count()  # shared by every row: every message distinct, all one length

    def __init__(
        self,
        row: str,
        stream: bool,
        tether_url: str,
        upstream_url: str,
        convs: list[list[str]] | None,
    ) -> None:
        self.row = row
        self.stream = stream
        self.convs = convs or []
        self.turns: defaultdict[int, int] = defaultdict(int)
        self.heads: dict[str, str] = {}  # conversation → its last response id
        if row == "direct":
            self.url = f"{upstream_url}/chat/completions"
            self.history = seed.openai_messages(STORED)
        elif row == "chat":
            self.url = f"{tether_url}/v1/chat/completions"
        else:
            self.url = f"{tether_url}/v1/responses"

    def text(self) -> str:
        return f"turn {next(self.texts):08d} of the bench, hello"

    def make(self, w: int) -> tuple[str, bytes, dict[str, str], Check]:
        """(url, body, headers, check) of worker `w`'s next turn."""
        text = self.text()
        said = f'"echo: {text}"'.encode()
        body: dict[str, Any] = {"model": "scripted"}
        if self.stream:
            body["stream"] = True
        if self.row == "direct":
            body["messages"] = [*self.history, {"role": "user", "content": text}]
            if self.stream:  # Tether asks its upstream for usage on streams; so does this
                body["stream_options"] = {"include_usage": True}
            return self.url, orjson.dumps(body), JSON, self._direct(said)
        mine = self.convs[w % len(self.convs)]
        cid = mine[self.turns[w] // VISITS % len(mine)]
        self.turns[w] += 1
        if self.row == "chat":
            body["messages"] = [{"role": "user", "content": text}]
            headers = {**JSON, "X-Tether-Conversation": cid}
            return self.url, orjson.dumps(body), headers, self._chat(cid, said)
        body["input"] = text
        if self.row == "previous":
            body["previous_response_id"] = self.heads.get(cid) or response_of(head_turn(cid))
        else:
            body["conversation"] = cid
        return self.url, orjson.dumps(body), JSON, self._responses(cid, said)

    def _direct(self, said: bytes) -> Check:
        def check(b: bytes) -> str:
            if self.stream:
                return "" if b"[DONE]" in b[-64:] else f"no [DONE]: {b[-64:]!r}"
            return "" if said in b else f"unexpected body: {b[:200]!r}"

        return check

    def _chat(self, cid: str, said: bytes) -> Check:
        named = f'"conversation_id":"{cid}"'.encode()

        def check(b: bytes) -> str:
            if named not in b:
                return f"not conversation {cid}: {b[:200]!r}"
            if self.stream:
                return "" if b"[DONE]" in b[-64:] else f"no [DONE]: {b[-64:]!r}"
            return "" if b'"content":' + said in b else f"unexpected body: {b[:200]!r}"

        return check

    def _responses(self, cid: str, said: bytes) -> Check:
        named = f'"conversation":{{"id":"{cid}"}}'.encode()

        def check(b: bytes) -> str:
            if named not in b:  # a fork would name a new conversation
                return f"not conversation {cid}: {b[:300]!r}"
            if b'"text":' + said not in b:
                return f"unexpected body: {b[:300]!r}"
            if self.stream and b'"type":"response.completed"' not in b[-4096:]:
                return f"no response.completed: {b[-200:]!r}"
            at = b.find(b'"id":"resp_')
            if at < 0:
                return f"no response id: {b[:200]!r}"
            self.heads[cid] = b[at + 6 : b.index(b'"', at + 6)].decode()
            return ""

        return check


async def phase(
    client: Client, row: Row, c: int, n: int, max_s: float, result: Result | None
) -> float:
    """Up to `n` turns of `row` on `c` workers for at most `max_s` s; the wall time taken."""
    counter = itertools.count()
    deadline = time.perf_counter() + max_s
    errors = 0

    async def worker(w: int) -> None:
        nonlocal errors
        while next(counter) < n and time.perf_counter() < deadline and errors < 50:
            url, body, headers, check = row.make(w)
            address, data = client.request(url, body, headers)
            t0 = time.perf_counter()
            try:
                r = await client.send(address, data)
            except (HTTPError, OSError, TimeoutError) as exc:
                err, r = repr(exc), None
            else:
                err = f"HTTP {r.status}: {r.body[:200]!r}" if r.status != 200 else check(r.body)
            if err or r is None:
                errors += 1
                if result is not None:
                    result.errors += 1
                    result.first_error = result.first_error or err
                continue
            if result is not None:
                result.n += 1
                result.lat_ms.append((r.done - t0) * 1000)
                if row.stream:
                    result.ttfb_ms.append(((r.first_byte or r.done) - t0) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(c)))
    return time.perf_counter() - started


async def level(
    client: Client,
    tether: procs.Tether,
    upstream: procs.Upstream,
    run: ResponsesRun,
    convs: dict[tuple[str, int, str], list[list[str]]],
    kind: str,
    c: int,
) -> None:
    """The four rows of one (kind, c): warm-up, then the blocks (ORDERS, in turn)."""
    s = run.sizes
    stream = kind == "sse"
    rows = {
        name: Row(name, stream, tether.url, upstream.base_url, convs.get((kind, c, name)))
        for name in ROWS
    }
    for row in rows.values():  # warm-up, not counted
        upstream.reset()
        await phase(client, row, c, s.warmup[c], s.max_s, None)
    merged = {name: Result(label, c, stream) for name, label in ROWS.items()}
    cpu: dict[str, defaultdict[str, float]] = {name: defaultdict(float) for name in ROWS}
    foreign: defaultdict[str, float] = defaultdict(float)  # core-seconds of other work
    pids = {"tether": tether.pid, "upstream": upstream.pid}
    per_block = max(1, s.n[c] // s.blocks)
    names = list(ROWS)
    for block in range(s.blocks):
        for name in (names[i] for i in ORDERS[block % len(ORDERS)]):
            upstream.reset()
            part = Result(name, c, stream)
            monitor = Monitor(pids, None)
            monitor.start()
            part.elapsed = await phase(client, rows[name], c, per_block, s.max_s / s.blocks, part)
            await monitor.stop(part)
            r = merged[name]
            r.n += part.n
            r.errors += part.errors
            r.first_error = r.first_error or part.first_error
            r.elapsed += part.elapsed
            r.lat_ms += part.lat_ms
            r.ttfb_ms += part.ttfb_ms
            foreign[name] += part.foreign_cores * part.elapsed
            for k, v in part.cpu_ms_per_req.items():
                cpu[name][k] += v * part.n
    for name, r in merged.items():
        if r.n:
            r.cpu_ms_per_req = {k: v / r.n for k, v in cpu[name].items()}
        r.foreign_cores = foreign[name] / r.elapsed if r.elapsed else 0.0
        run.results[(kind, c, name)] = r
        tether_cpu = r.cpu_ms_per_req.get("tether", math.nan)
        print(f"{r.line()}  Tether CPU {tether_cpu:.3f} ms/turn", flush=True)


async def measure(tether: procs.Tether, upstream: procs.Upstream, run: ResponsesRun) -> None:
    convs = pools(run.sizes)
    client = load.client()
    try:
        for c in LEVELS:
            for kind in KINDS:
                await level(client, tether, upstream, run, convs, kind, c)
                for line in target_lines_for(run, kind, c):
                    print(line, flush=True)
    finally:
        await client.aclose()


def run_all(workdir: Path, quick: bool) -> ResponsesRun:
    started = time.monotonic()
    run = ResponsesRun(Sizes.quick() if quick else Sizes.full())
    db = workdir / "responses.db"
    print("responses vs chat completions (issue 17): migrating and seeding ...", flush=True)
    t0 = time.perf_counter()
    procs.migrate(db)
    run.conversations, run.messages = seed_all(db, pools(run.sizes))
    run.seeded_s = time.perf_counter() - t0
    run.mib = db.stat().st_size / procs.MIB
    print(
        f"  {run.conversations:,} conversations, {run.messages:,} messages in "
        f"{run.seeded_s:.1f} s ({run.mib:.0f} MiB)",
        flush=True,
    )
    upstream = procs.Upstream()
    tether = procs.Tether(db, upstream.base_url)
    try:
        tether.start()
        time.sleep(1.0)
        asyncio.run(measure(tether, upstream, run))
    except Exception as exc:  # the rest of the suite still reports
        run.error = repr(exc)
    finally:
        tether.stop()
        upstream.close()
        if "Traceback" in tether.output():
            run.error = (run.error or "") + " tether logged a traceback: " + tether.output()[-1500:]
    run.elapsed = time.monotonic() - started
    return run


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _cpu(r: Result) -> float:
    return r.cpu_ms_per_req.get("tether", math.nan)


def target_lines_for(run: ResponsesRun, kind: str, c: int) -> list[str]:
    chat, prev = run.get(kind, c, "chat"), run.get(kind, c, "previous")
    what = f"{kind.upper()} c={c}"
    if chat is None or prev is None:
        return [f"N/A   Responses turn ÷ chat turn, {what}: not measured ({run.error or '?'})"]
    cpu_r, p50_r = _ratio(_cpu(prev), _cpu(chat)), _ratio(prev.p(50), chat.p(50))
    ok = cpu_r <= TARGET_RATIO and p50_r <= TARGET_RATIO
    lines = [
        f"{'PASS' if ok else 'FAIL'}  Responses turn ÷ chat-completions turn, {what} "
        f"(previous_response_id, stored {STORED}): Tether CPU {_cpu(prev):.3f} vs "
        f"{_cpu(chat):.3f} ms/turn ({cpu_r:.3f}×), latency p50 {prev.p(50):.2f} vs "
        f"{chat.p(50):.2f} ms ({p50_r:.3f}×); target ≤ {TARGET_RATIO:.2f}× both"
    ]
    extra = f"      p99 {prev.p(99):.2f} vs {chat.p(99):.2f} ms ({prev.p(99) / chat.p(99):.2f}×)"
    if kind == "sse":
        extra += (
            f"; TTFB p50 {prev.ttfb(50):.2f} vs {chat.ttfb(50):.2f} ms "
            f"({_ratio(prev.ttfb(50), chat.ttfb(50)):.2f}×)"
        )
    direct = run.get(kind, c, "direct")
    if direct is not None:
        added_p, added_c = prev.p(50) - direct.p(50), chat.p(50) - direct.p(50)
        extra += (
            f"; added over direct p50 {added_p:.2f} vs {added_c:.2f} ms "
            f"({_ratio(added_p, added_c):.2f}×)"
        )
    lines.append(extra)
    conv = run.get(kind, c, "conversation")
    if conv is not None:
        lines.append(
            f"      naming the conversation instead: Tether CPU {_cpu(conv):.3f} ms/turn "
            f"({_ratio(_cpu(conv), _cpu(chat)):.3f}×), p50 {conv.p(50):.2f} ms "
            f"({_ratio(conv.p(50), chat.p(50)):.3f}×); previous_response_id's lookup "
            f"{_cpu(prev) - _cpu(conv):+.3f} ms CPU, {prev.p(50) - conv.p(50):+.2f} ms p50"
        )
    return lines


def target_lines(run: ResponsesRun) -> list[str]:
    if run.error and not run.results:
        return [f"N/A   Responses turn ÷ chat turn: not measured ({run.error})"]
    return [line for c in LEVELS for kind in KINDS for line in target_lines_for(run, kind, c)]


def _f(x: float, digits: int = 2) -> str:
    return "—" if math.isnan(x) else f"{x:,.{digits}f}"


def table(run: ResponsesRun) -> list[str]:
    out = [
        "| kind | c | request | n | TTFB p50 · p99 ms | p50 ms | p99 ms | req/s "
        "| CPU ms/turn tether / upstream / loadgen | ÷ chat: CPU · p50 · p99 | other load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in LEVELS:
        for kind in KINDS:
            chat = run.get(kind, c, "chat")
            for name in ROWS:
                r = run.results.get((kind, c, name))
                if r is None:
                    continue
                cpu = r.cpu_ms_per_req
                figures = " / ".join(
                    _f(cpu.get(k, math.nan)) for k in ("tether", "upstream", "loadgen")
                )
                ratio = "—"
                if chat is not None and name in ("previous", "conversation") and r.n:
                    ratio = (
                        f"{_ratio(_cpu(r), _cpu(chat)):.3f} · {r.p(50) / chat.p(50):.3f} · "
                        f"{r.p(99) / chat.p(99):.2f}"
                    )
                ttfb = f"{_f(r.ttfb(50))} · {_f(r.ttfb(99))}" if kind == "sse" else "—"
                err = f" ⚠ {r.errors} errors: {r.first_error}" if r.errors else ""
                out.append(
                    f"| {kind.upper()} | {c} | {ROWS[name]}{err} | {r.n} | {ttfb} | "
                    f"{_f(r.p(50))} | {_f(r.p(99))} | {r.rps:,.0f} | {figures} | {ratio} | "
                    f"{r.foreign_cores:.2f} |"
                )
    return out


def markdown(run: ResponsesRun) -> str:
    s = run.sizes
    out = [
        "## Responses vs Chat Completions (issue 17)",
        "",
        f"One `tether serve` on its own SQLite file ({run.conversations:,} seeded conversations "
        f"of {STORED} messages, each with a completed turn at its head; {run.messages:,} "
        f"messages, {run.mib:,.0f} MiB, seeded in {run.seeded_s:.1f} s) and the scripted "
        f"upstream. The same turn three ways, {VISITS} turns in a row per conversation, one new "
        "user message of the same length each (so the same reply size and history length): "
        "*chat* (`POST /v1/chat/completions`, `X-Tether-Conversation`), *responses "
        "(previous_response_id)* (`POST /v1/responses`, continued from the conversation's last "
        "response), *responses (conversation)* (naming the conversation); and *direct*, the "
        f"upstream alone with the history + 1 message. Per kind and c, the rows ran in "
        f"{s.blocks} blocks each (up to {s.n[1]} / {s.n[8]} turns a row at c=1 / 8), in the "
        "orders of a balanced Latin square (each row follows each other row equally often). "
        "÷ chat = that row ÷ the chat row of the same kind and c.",
        "",
    ]
    if run.error:
        out += [f"⚠ {run.error}", ""]
    out += [*table(run), "", "```", *target_lines(run), "```", ""]
    return "\n".join(out)
