"""A Hermes import of 100,000 messages: `tether import hermes` on a synthetic state.db.

The file is built on the fixture's own schema (../shared/fixtures/hermes/schema.sql, FTS
triggers included) with at least `--rows` message rows (100,000 by default) in a few hundred
sessions, shaped as Hermes writes them: plain sessions, compression chains (each child starting with
head copies, a summary row and tail copies), sessions compacted in place (`active=0,
compacted=1`, then a new generation), forks (copies of the source's rows, then their own),
tool calls with their results. Then it is imported into a fresh SQLite Tether database
through the CLI's own code (`read_hermes`, then `write_conversations` inside `with_store`),
and once more as the real command (`python -m tether import hermes`, a process). The state.db
is cached in the temp dir between runs (`state_db`). Target: the
import takes under a minute (issue 16).

Run alone: `.venv/bin/python -m bench.hermes_import [--rows 100000] [--seed 7]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.cli.common import with_store
from tether.config import load_settings
from tether.importing import HermesImport, read_hermes
from tether.importing.write import WriteReport, write_conversations
from tether.store.base import Store

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(os.environ.get("TETHER_HERMES_FIXTURE") or ROOT.parent / "shared/fixtures/hermes")
TARGET_SECONDS = 60.0
SYNTH_VERSION = 1  # bump when build() makes other rows: the cached state.db is keyed by it
SUMMARY = (
    "[CONTEXT COMPACTION — REFERENCE ONLY] Earlier turns were compacted into the summary "
    "below. {body}\n--- END OF CONTEXT SUMMARY — respond to the message below, not the "
    "summary above ---"
)
VOCABULARY = (
    "harbour ferry crane berth tide pilot cargo manifest customs squall tug breakwater canteen "
    "drill vessel container floodlight quay shift engine boiler generator diesel bilge pump "
    "permit audit route guesthouse coast inland lesson morning evening report schedule"
)
WORDS = VOCABULARY.split()

Row = tuple[str, Any, Any, Any, Any, float]  # role, content, tool_calls, tool_call_id, name, ts


@dataclass
class Synth:
    """The sessions and rows of the file being made, in insertion order."""

    rng: random.Random
    clock: float = 1.8e9
    sessions: list[tuple[Any, ...]] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    turns: int = 0
    at: dict[str, list[int]] = field(default_factory=dict)  # a session's rows in `rows`

    def tick(self) -> float:
        self.clock += self.rng.uniform(0.05, 3.0)
        return self.clock

    def text(self, words: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(words))

    def turn(self) -> list[Row]:
        """One exchange: the user, sometimes a tool call and its result, the reply."""
        self.turns += 1
        n = self.turns
        out: list[Row] = [("user", f"turn {n}: {self.text(25)} [tok-{n}]", None, None, None, 0)]
        if self.rng.random() < 0.15:
            call = f"call_{n}"
            calls = [
                {"id": call, "call_id": call, "response_item_id": f"fc_{n}", "type": "function",
                 "function": {"name": "todo", "arguments": json.dumps({"n": n})}}
            ]  # fmt: skip
            out.append(("assistant", "", json.dumps(calls), None, None, 0))
            out.append(("tool", json.dumps({"todos": [self.text(60)]}), None, call, "todo", 0))
        out.append(("assistant", f"reply {n}: {self.text(90)}", None, None, None, 0))
        return [(r, c, tc, tid, name, self.tick()) for r, c, tc, tid, name, _ in out]

    def session(self, sid: str, parent: str | None = None, title: str | None = None) -> None:
        self.sessions.append([sid, parent, None, self.tick(), None, title])

    def end(self, sid: str, reason: str) -> None:
        for s in self.sessions:
            if s[0] == sid:
                s[2], s[4] = reason, self.tick()

    def write(self, sid: str, rows: list[Row]) -> None:
        at = self.at.setdefault(sid, [])
        for role, content, calls, call_id, name, ts in rows:
            at.append(len(self.rows))
            self.rows.append((sid, role, content, calls, call_id, name, ts, 1, 0))

    def compact_in_place(self, sid: str) -> None:
        """Every row of the session active so far: active=0, compacted=1."""
        for i in self.at.get(sid, []):
            self.rows[i] = (*self.rows[i][:7], 0, 1)


def conversation(synth: Synth, n: int, turns: int) -> None:
    """One conversation of `turns` turns, shaped at random: plain, a compression chain, in
    place, or plain with a fork."""
    kind = synth.rng.choices(["plain", "chain", "inplace", "fork"], [5, 3, 1, 1])[0]
    sid = f"bench-{n}"
    synth.session(sid)
    history: list[Row] = []
    every = max(4, turns // 3)  # compact about twice
    for t in range(1, turns + 1):
        rows = synth.turn()
        synth.write(sid, rows)
        history += rows
        if kind in ("chain", "inplace") and t % every == 0 and t < turns:
            sid = compact(synth, sid, history, in_place=kind == "inplace", k=t // every)
        if kind == "fork" and t == turns // 2:
            fork = f"{sid}-alt"
            synth.end(sid, "branched")
            synth.session(fork, parent=sid, title=f"bench fork {n}")
            synth.write(fork, history)
            for _ in range(max(1, turns // 4)):
                synth.write(fork, synth.turn())


def compact(synth: Synth, sid: str, history: list[Row], *, in_place: bool, k: int) -> str:
    """Hermes' compaction: head copies (the first 3 rows), a summary, tail copies (the last
    turn), in a new child session or (in place) after the session's rows set compacted."""
    head = history[:3]
    tail_from = max(i for i, r in enumerate(history) if r[0] == "user")
    tail = history[tail_from:]
    summary = SUMMARY.format(body=synth.text(120))
    generation: list[Row] = [*head, ("assistant", summary, None, None, None, synth.tick()), *tail]
    if in_place:
        synth.compact_in_place(sid)
        synth.write(sid, generation)
        return sid
    child = f"{sid}-c{k}"
    synth.end(sid, "compression")
    synth.session(child, parent=sid)
    synth.write(child, generation)
    return child


def check(result: HermesImport) -> None:
    """Each turn once per conversation, in order: its `[tok-N]` numbers strictly increase."""
    for conv in result.conversations:
        tokens = [
            int(m.content.rsplit("[tok-", 1)[1].rstrip("]"))
            for m in conv.messages
            if m.role == "user"
        ]
        assert tokens == sorted(set(tokens)), f"{conv.id}: a turn twice or out of order"


def build(path: Path, rows: int, seed: int) -> Synth:
    synth = Synth(random.Random(seed))
    n = 0
    while len(synth.rows) < rows:
        n += 1
        conversation(synth, n, synth.rng.randint(20, 260))
    schema = (FIXTURE / "schema.sql").read_text()
    with sqlite3.connect(path) as db:
        db.executescript(schema.replace("CREATE TABLE sqlite_sequence(name,seq);", ""))
        db.executemany(
            "INSERT INTO sessions (id, source, model, system_prompt, parent_session_id, "
            "end_reason, started_at, ended_at, title) VALUES (?, 'api_server', 'bench-model', "
            "'You are a benchmark.', ?, ?, ?, ?, ?)",
            synth.sessions,
        )
        db.executemany(
            "INSERT INTO messages (session_id, role, content, tool_calls, tool_call_id, "
            "tool_name, timestamp, active, compacted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            synth.rows,
        )
    return synth


async def _write(store: Store, conversations: Any) -> WriteReport:
    return await write_conversations(store, "default", conversations)


@dataclass
class HermesRun:
    """The figures of one run (`make bench` reports them)."""

    rows: int  # message rows in the synthetic state.db
    sessions: int
    state_mib: float
    build_s: float
    read_s: float
    write_s: float
    conversations: int
    messages: int  # imported (the head/tail copies left out)
    aliases: int
    checkpoints: int
    cli_s: float  # `python -m tether import hermes`, a process, into another fresh file
    cached: bool = False  # the state.db was reused from the temp dir (built by an earlier run)

    @property
    def total_s(self) -> float:
        return self.read_s + self.write_s

    @property
    def ok(self) -> bool:
        return self.total_s < TARGET_SECONDS and self.cli_s < TARGET_SECONDS


def state_db(rows: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The synthetic state.db and its figures, built once and cached in the temp dir under a
    key of SYNTH_VERSION, the sizes and the fixture's schema (building it takes ~30 s: Hermes'
    own FTS triggers index every row); the import reads it without writing."""
    schema = (FIXTURE / "schema.sql").read_bytes()
    key = hashlib.sha1(f"{SYNTH_VERSION}:{rows}:{seed}".encode() + schema).hexdigest()[:12]
    root = Path(tempfile.gettempdir())
    cache = root / f"tether-bench-hermes-state-{rows}-{key}"
    meta = cache / "state.json"
    if meta.exists():
        return cache / "state.db", {**json.loads(meta.read_text()), "cached": True}
    for old in root.glob(f"tether-bench-hermes-state-{rows}-*"):
        shutil.rmtree(old, ignore_errors=True)
    cache.mkdir(parents=True)
    t0 = time.perf_counter()
    synth = build(cache / "state.db", rows, seed)
    figures = {
        "rows": len(synth.rows),
        "sessions": len(synth.sessions),
        "build_s": time.perf_counter() - t0,
        "mib": (cache / "state.db").stat().st_size / 2**20,
    }
    meta.write_text(json.dumps(figures))
    return cache / "state.db", {**figures, "cached": False}


def run(rows: int, seed: int) -> HermesRun:
    state, built = state_db(rows, seed)
    with tempfile.TemporaryDirectory(prefix="tether-bench-hermes-") as tmp:
        state_mib = built["mib"]
        how = "reused from the cache; built" if built["cached"] else "built"
        print(
            f"synthetic state.db: {built['rows']:,} message rows, {built['sessions']} "
            f"sessions, {state_mib:.0f} MiB ({how} in {built['build_s']:.1f} s)"
        )
        settings = load_settings(None, database_url=f"sqlite:///{tmp}/tether.db")
        t0 = time.perf_counter()
        result = read_hermes(state)
        t_read = time.perf_counter() - t0
        report = asyncio.run(with_store(settings, lambda s: _write(s, result.conversations)))
        total = time.perf_counter() - t0
        check(result)
        print(
            f"read {t_read:.2f} s, write {total - t_read:.2f} s: {len(report.imported)} "
            f"conversations, {report.messages:,} messages (the copies left out), "
            f"{report.aliases} aliases, {report.checkpoints} checkpoints"
        )
        verdict = "PASS" if total < TARGET_SECONDS else "FAIL"
        print(
            f"{verdict} Hermes import of {built['rows']:,} message rows: {total:.1f} s "
            f"(target < {TARGET_SECONDS:.0f} s), {built['rows'] / total:,.0f} rows/s"
        )
        t0 = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "tether", "import", "hermes", str(state),
             "--database-url", f"sqlite:///{tmp}/cli.db"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - t0
        assert "conversations imported" in cli.stdout, cli.stdout
        print(
            f"the command itself (`tether import hermes`, a process, into another fresh file): "
            f"{elapsed:.1f} s, {built['rows'] / elapsed:,.0f} rows/s"
        )
        return HermesRun(
            rows=built["rows"],
            sessions=built["sessions"],
            state_mib=state_mib,
            build_s=built["build_s"],
            cached=built["cached"],
            read_s=t_read,
            write_s=total - t_read,
            conversations=len(report.imported),
            messages=report.messages,
            aliases=report.aliases,
            checkpoints=report.checkpoints,
            cli_s=elapsed,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="message rows in the file")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    run(args.rows, args.seed)


if __name__ == "__main__":
    main()
