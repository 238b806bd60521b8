"""Seed conversations straight into Tether's SQLite file (before the server starts).

The rows follow `src/tether/store/migrations/sqlite/` (0001_init.sql, 0003_history_hash.sql):
one `conversations` row (`last_seq` set, and the transcript's `history_hash` / `history_len`
computed exactly as Tether computes them, `tether.engine.fingerprint.chain`, so a full-history
request naming a seeded conversation takes the path it takes on a conversation Tether wrote),
messages with gapless `seq` and JSON-encoded `content`, and optionally a checkpoint that covers
all but the last 10 messages (what a long-lived, compacted conversation looks like: the model's
view is the summary plus a short tail).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from tether.compaction.summary import PROMPT_VERSION
from tether.compaction.tokens import count_message, count_text
from tether.engine.fingerprint import EMPTY, chain
from tether.model import Message
from tether.store import sqlite_sql as sql

TENANT = "default"
TAIL = 10  # messages a seeded checkpoint leaves in the view

SUMMARY = """## Goal
Keep the fleet's deploys green and explain every change to the on-call engineer.
## Constraints and preferences of the user
Short answers; exact service names; no restarts during business hours.
## Decisions made
Deploys go out one service at a time; config changes are reviewed first.
## Completed actions
Checked the deploy logs of service-0 to service-16 step by step.
## Open tasks
Keep checking each new step's deploy log.
## Latest unfulfilled ask (verbatim)
"please check the deploy log"
## Critical context
Nothing else is pending."""


def text(seq: int) -> tuple[str, str]:
    """(role, content) of message `seq` (odd: user, even: assistant), ~20 tokens each."""
    svc = f"service-{seq % 17}"
    if seq % 2:
        return "user", f"Step {seq}: please check the deploy log of {svc} and tell me what changed."
    return "assistant", f"Step {seq}: {svc} deployed in {seq % 90 + 3} s; two config keys changed."


_ROWS: list[tuple[int, str, str, int]] = []


def rows(size: int) -> list[tuple[int, str, str, int]]:
    """(seq, role, content JSON, tokens) for seq 1..size; tokens are real o200k counts."""
    for seq in range(len(_ROWS) + 1, size + 1):
        role, content = text(seq)
        tokens = count_message({"role": role, "content": content})
        _ROWS.append((seq, role, orjson.dumps(content).decode(), tokens))
    return _ROWS[:size]


_HASHES: list[bytes] = [EMPTY]


def history_hash(size: int) -> bytes:
    """The transcript hash of messages 1..size (what Tether stores as `history_hash`)."""
    for seq in range(len(_HASHES), size + 1):
        _HASHES.append(chain(_HASHES[-1], [Message(*text(seq))]))
    return _HASHES[size]


def distinct_text(n: int, seq: int) -> tuple[str, str]:
    """(role, content) of message `seq` of distinct conversation `n`: the number is in the text,
    so every distinct conversation has its own transcript hash."""
    if seq % 2:
        return "user", f"Conversation {n}, step {seq}: what changed in service-{n % 17}?"
    return "assistant", f"Conversation {n}, step {seq}: two config keys of service-{n % 17}."


def distinct_messages(n: int, size: int) -> list[dict[str, Any]]:
    """Distinct conversation `n`'s transcript as OpenAI messages (what its client resends)."""
    return [
        dict(zip(("role", "content"), distinct_text(n, s), strict=True)) for s in range(1, size + 1)
    ]


def openai_messages(size: int) -> list[dict[str, Any]]:
    """The same transcript as OpenAI messages (what Tether sends upstream as history)."""
    return [{"role": text(s)[0], "content": text(s)[1]} for s in range(1, size + 1)]


def history_tokens(size: int) -> int:
    return sum(r[3] for r in rows(size))


class Seeder:
    """One transaction of inserts into a migrated (empty) Tether database."""

    def __init__(self, db_path: Path) -> None:
        self.conn = sqlite3.connect(db_path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("BEGIN")
        self.now = time.time()
        self.conn.execute(
            "INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)", (TENANT, self.now)
        )
        self.messages = 0

    def conversation(self, cid: str, size: int, checkpoint: bool = False) -> int:
        """Insert conversation `cid` holding `size` messages; return its pk."""
        transcript = rows(size)
        cur = self.conn.execute(
            "INSERT INTO conversations (tenant_id, id, title, model, last_seq, turn_count, "
            "created_at, updated_at, history_hash, history_len) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                TENANT,
                cid,
                f"bench {cid}",
                "scripted",
                size,
                size // 2,
                self.now,
                self.now,
                history_hash(size),
                size,
            ),
        )
        pk = int(cur.lastrowid or 0)
        self.conn.executemany(
            "INSERT INTO messages (conversation_pk, seq, role, content, tokens, created_at) "
            "VALUES (?,?,?,?,?,?)",
            (
                (pk, seq, role, content, tokens, self.now)
                for seq, role, content, tokens in transcript
            ),
        )
        self.messages += size
        if checkpoint:
            covers = size - TAIL
            before = sum(r[3] for r in transcript)
            after = 4 + count_text(SUMMARY) + sum(r[3] for r in transcript[covers:])
            stats = {"kind": "summary", "saved": round(1 - after / before, 4), "seeded": True}
            self.conn.execute(
                "INSERT INTO checkpoints (conversation_pk, epoch, covers_through_seq, "
                "prune_through_seq, summary, ledger, tokens_before, tokens_after, model, "
                "prompt_version, stats, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    pk,
                    1,
                    covers,
                    covers,
                    SUMMARY,
                    "[]",
                    before,
                    after,
                    "scripted",
                    PROMPT_VERSION,
                    orjson.dumps(stats).decode(),
                    self.now,
                ),
            )
            self.conn.execute("UPDATE conversations SET epoch = 1 WHERE pk = ?", (pk,))
        return pk

    def distinct(self, prefix: str, count: int, size: int) -> None:
        """Insert conversations `{prefix}-0` … `{prefix}-{count-1}`, `size` messages each, every
        one with its own transcript (`distinct_text`); two executemany statements."""
        start = int(
            self.conn.execute("SELECT COALESCE(MAX(pk), 0) FROM conversations").fetchone()[0]
        )
        convs = []
        msgs = []
        for n in range(count):
            pk = start + 1 + n
            h = EMPTY
            for seq in range(1, size + 1):
                role, content = distinct_text(n, seq)
                h = chain(h, [Message(role, content)])
                tokens = count_message({"role": role, "content": content})
                msgs.append((pk, seq, role, orjson.dumps(content).decode(), tokens, self.now))
            cid = f"{prefix}-{n}"
            at = self.now - count + n  # distinct activity times, the newest last
            convs.append(
                (pk, TENANT, cid, f"bench {cid}", "scripted", size, size // 2, at, at, h, size)
            )
        self.conn.executemany(
            "INSERT INTO conversations (pk, tenant_id, id, title, model, last_seq, turn_count, "
            "created_at, updated_at, history_hash, history_len) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            convs,
        )
        self.conn.executemany(
            "INSERT INTO messages (conversation_pk, seq, role, content, tokens, created_at) "
            "VALUES (?,?,?,?,?,?)",
            msgs,
        )
        self.messages += count * size

    def close(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


def lookup_plan(db_path: Path, candidates: int = 2) -> list[str]:
    """SQLite's plan (EXPLAIN QUERY PLAN) for the id-less lookup: the statement of
    `SqliteStore.find_by_history` (src/tether/store/sqlite.py, copied) with `candidates`
    hashes."""
    marks = ",".join("?" * candidates)
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT {sql.CONV_COLS} FROM {sql.CONV_FROM} "
            f"WHERE c.tenant_id = ? AND c.history_hash IN ({marks})",
            (TENANT, *(bytes([i]) * 16 for i in range(candidates))),
        ).fetchall()
    finally:
        conn.close()
    return [str(r[-1]) for r in rows]
