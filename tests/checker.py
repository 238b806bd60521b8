"""The history checker (Jepsen style): record what clients were told, then read every
conversation back and check that nothing acknowledged was lost, nothing was done twice, and the
transcript's structure holds. Reused by every crash and load test."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Outcome = Literal["ok", "fail", "info"]  # happened / definitely did not / indeterminate


@dataclass(frozen=True, slots=True)
class Op:
    conversation: str
    text: str  # the user message appended (unique per op)
    outcome: Outcome
    key: str | None = None  # the Idempotency-Key, when one was sent


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)


@dataclass
class Report:
    acknowledged: int
    lost: list[Op]
    duplicated: list[str]
    failed_present: list[Op]
    indeterminate_present: int
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.failed_present or self.violations)


def check(db_path: Path, history: History, tenant: str = "default") -> Report:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        violations = []
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            violations.append(f"integrity_check: {integrity}")
        rows = conn.execute(
            "SELECT c.id, m.seq, m.role, m.content, m.turn_id FROM messages m "
            "JOIN conversations c ON c.pk = m.conversation_pk WHERE c.tenant_id = ? "
            "ORDER BY c.id, m.seq",
            (tenant,),
        ).fetchall()
        checkpoints = conn.execute(
            "SELECT c.id, k.epoch FROM checkpoints k JOIN conversations c "
            "ON c.pk = k.conversation_pk ORDER BY c.id, k.epoch"
        ).fetchall()
    finally:
        conn.close()
    by_conv: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    for cid, seq, role, content, turn in rows:
        by_conv[cid].append((seq, role, content, turn))
    present: Counter[tuple[str, str]] = Counter()
    for cid, msgs in by_conv.items():
        seqs = [m[0] for m in msgs]
        if seqs != list(range(1, len(seqs) + 1)):  # rule 4: gapless, increasing
            violations.append(f"{cid}: seq not gapless: {seqs[:10]}…")
        for i, (seq, role, content, turn) in enumerate(msgs):
            if role == "user":
                present[(cid, content)] += 1
                # rule 5: the turn's reply follows its question, same turn, nothing between
                nxt = msgs[i + 1] if i + 1 < len(msgs) else None
                if nxt is None or nxt[1] != "assistant" or nxt[3] != turn:
                    violations.append(f"{cid}: turn at seq {seq} is not contiguous")
    for cid, epochs in _group(checkpoints).items():  # rule 6: one chain of epochs
        if epochs != list(range(1, len(epochs) + 1)):
            violations.append(f"{cid}: checkpoint epochs {epochs}")
    encoded = {(op.conversation, _json_text(op.text)): op for op in history.ops}
    lost = [op for (cid, t), op in encoded.items() if op.outcome == "ok" and not present[(cid, t)]]
    failed = [op for (cid, t), op in encoded.items() if op.outcome == "fail" and present[(cid, t)]]
    duplicated = [f"{cid}: {t}" for (cid, t), n in present.items() if n > 1]
    indeterminate = sum(
        1 for (cid, t), op in encoded.items() if op.outcome == "info" and present[(cid, t)]
    )
    acked = sum(1 for op in history.ops if op.outcome == "ok")
    return Report(acked, lost, duplicated, failed, indeterminate, violations)


def _json_text(text: str) -> str:
    import orjson

    return orjson.dumps(text).decode()


def _group(rows: list[tuple[str, int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for cid, epoch in rows:
        out[cid].append(epoch)
    return out
