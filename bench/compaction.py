"""Compaction bookkeeping, in-process: `tether.engine.compact.compact` on a real `SqliteStore`
with an `Upstream` that answers the summariser instantly, so what is timed is Tether's own work
(cut, prune, summariser request, ledger, checkpoint commit) and not a model.

Run alone: `.venv/bin/python -m bench.compaction`.
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tether.compaction.tokens import count_message, count_text
from tether.config import Settings
from tether.engine.compact import compact
from tether.engine.target import budget_for
from tether.model import Message
from tether.store.sqlite import SqliteStore
from tether.upstream.base import Chunk
from tether.upstream.wire import chat_message

SIZES = (10_000, 100_000)  # tokens of the conversation when it is compacted
REPS = {10_000: 5, 100_000: 3}  # one fresh conversation per repetition
FIRES_AT = 0.9  # the conversation is 1/0.9 of the compaction limit: it has just crossed it
SUMMARY = "## Goal\nShip the release.\n## Open tasks\nFix OPS-1234 in /srv/app/api/config.yaml."


class FixedSummary:
    """An `Upstream` (src/tether/upstream/client.py) that returns one summary at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.tokens = count_text(SUMMARY)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        message = {"role": "assistant", "content": SUMMARY}
        return {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": self.tokens},
        }

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        raise NotImplementedError("the summariser is never streamed")
        yield  # pragma: no cover - makes this an async generator

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": []}

    async def aclose(self) -> None:
        return None


def agent_transcript(tokens: int, seed: int) -> list[Message]:
    """An agent-style chat (asks, replies with identifiers, small tool calls) of ~`tokens`."""
    rnd = random.Random(seed)
    out: list[Message] = []
    total = 0
    i = 0
    while total < tokens:
        i += 1
        svc = f"svc-{rnd.randrange(40)}"
        ticket = f"OPS-{rnd.randrange(1000, 9999)}"
        batch = [
            Message(
                "user",
                f"Look at /srv/app/{svc}/config.yaml for {ticket}: error rate "
                f"{rnd.randrange(1, 30)}% at {rnd.randrange(80, 900)} ms p99. What changed?",
            )
        ]
        if i % 4 == 0:
            call = {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": "read_file",
                    "arguments": orjson.dumps({"path": f"/srv/app/{svc}/config.yaml"}).decode(),
                },
            }
            batch.append(Message("assistant", None, tool_calls=[call]))
            batch.append(
                Message(
                    "tool",
                    f"replicas: {rnd.randrange(2, 9)}\ntimeout_ms: {rnd.randrange(100, 5000)}\n"
                    f"image: registry.local/{svc}:{rnd.getrandbits(28):07x}",
                    tool_call_id=f"call_{i}",
                )
            )
        batch.append(
            Message(
                "assistant",
                f"{svc} moved its timeout to {rnd.randrange(100, 5000)} ms in commit "
                f"{rnd.getrandbits(40):010x}; see https://ci.local/{svc}/runs/{i}. "
                f"Memory is {rnd.randrange(90, 900)} MiB, so I would roll back {ticket}.",
            )
        )
        for m in batch:
            m = Message(m.role, m.content, m.tool_calls, m.tool_call_id, tokens=0)
            t = count_message(chat_message(m))
            out.append(Message(m.role, m.content, m.tool_calls, m.tool_call_id, tokens=t))
            total += t
    return out


def _insert(db: Path, cid: str, messages: list[Message]) -> None:
    now = time.time()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT OR IGNORE INTO tenants (id, created_at) VALUES ('default', ?)", (now,))
        cur = conn.execute(
            "INSERT INTO conversations (tenant_id, id, model, last_seq, created_at, updated_at) "
            "VALUES ('default', ?, 'scripted', ?, ?, ?)",
            (cid, len(messages), now, now),
        )
        pk = cur.lastrowid
        conn.executemany(
            "INSERT INTO messages (conversation_pk, seq, role, content, tool_calls, "
            "tool_call_id, tokens, created_at) VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    pk,
                    seq,
                    m.role,
                    None if m.content is None else orjson.dumps(m.content).decode(),
                    None if m.tool_calls is None else orjson.dumps(m.tool_calls).decode(),
                    m.tool_call_id,
                    m.tokens,
                    now,
                )
                for seq, m in enumerate(messages, 1)
            ],
        )


def settings_for(tokens: int) -> Settings:
    """A context window whose compaction limit is FIRES_AT × the conversation's size."""
    usable = math.ceil(tokens / FIRES_AT / 0.75)
    window = usable + min(4096, math.ceil(usable / 3))
    return Settings(
        model_context_windows={"scripted": window},
        compaction_threshold=0.75,
        reserved_output_tokens=4096,
    )


@dataclass
class CompactionRun:
    tokens: int
    messages: int
    kind: str
    bookkeeping_ms: float  # checkpoint stats["ms"]: compaction without the LLM call
    llm_ms: float
    wall_ms: float  # the whole compact() call, checkpoint commit included
    tokens_before: int
    tokens_after: int
    saved: float
    summarised: int
    ledger: int
    summariser_calls: int


async def measure(tokens: int, reps: int, db: Path) -> list[CompactionRun]:
    store = SqliteStore(f"sqlite:///{db}")
    await store.open()
    await store.migrate()
    upstream = FixedSummary()
    settings = settings_for(tokens)
    budget = budget_for(settings, "scripted", {})
    runs = []
    try:
        for rep in range(reps):
            messages = agent_transcript(tokens, seed=rep)
            cid = f"compact-{tokens}-{rep}"
            _insert(db, cid, messages)
            conv = await store.resolve("default", cid)
            assert conv is not None
            stored = await store.load_messages(conv.pk)
            calls = upstream.calls
            t0 = time.perf_counter()
            result = await compact(
                store=store,
                upstream=upstream,
                conv=conv,
                checkpoint=None,
                stored=stored,
                new=[],
                budget=budget,
                model="scripted",
                min_tail_messages=settings.compaction_min_tail_messages,
            )
            wall = (time.perf_counter() - t0) * 1000
            if result is None:
                raise RuntimeError(f"nothing compacted for {tokens} tokens")
            cp = result.checkpoint
            runs.append(
                CompactionRun(
                    tokens=sum(m.tokens for m in stored),
                    messages=len(stored),
                    kind=str(cp.stats.get("kind")),
                    bookkeeping_ms=float(cp.stats.get("ms", math.nan)),
                    llm_ms=float(cp.stats.get("llm_ms", 0.0)),
                    wall_ms=wall,
                    tokens_before=cp.tokens_before,
                    tokens_after=cp.tokens_after,
                    saved=float(cp.stats.get("saved", math.nan)),
                    summarised=int(cp.stats.get("messages_summarised", 0)),
                    ledger=len(cp.ledger),
                    summariser_calls=upstream.calls - calls,
                )
            )
    finally:
        await store.close()
    return runs


async def run_all(workdir: Path) -> dict[int, list[CompactionRun]]:
    db = workdir / "compaction.db"
    return {size: await measure(size, REPS[size], db) for size in SIZES}


def main() -> None:
    from tether.cli import setup_logging

    setup_logging("warning")
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        results = asyncio.run(run_all(Path(tmp)))
    for size, runs in results.items():
        for r in runs:
            print(size, r)


if __name__ == "__main__":
    main()
