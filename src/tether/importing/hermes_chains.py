"""Which Hermes sessions make one conversation, and in what order to import them.

`parent_session_id` means two things in Hermes. A compression ends the parent
(`end_reason = 'compression'`) and continues the conversation in the child: the two are one
conversation. A fork (`POST /api/sessions/{id}/fork`, `end_reason = 'branched'` on the source,
which may still get turns afterwards) starts a new conversation that begins with copies of the
source's rows: it becomes a Tether fork. The parent's end reason tells them apart."""

from __future__ import annotations

from dataclasses import dataclass

from tether.importing.hermes_db import HermesSession, HermesTables
from tether.importing.hermes_rows import is_summary

COMPRESSION = "compression"
_SUMMARY_PROBE = 64  # rows of a child looked at for a summary (a compression child has one early)


@dataclass(slots=True)
class Chain:
    sessions: list[HermesSession]  # root first, the live tip last
    fork_of: str | None = None  # the session the root was forked from
    lost_parent: str | None = None  # a parent_session_id that names no session of the file


def chains_of(tables: HermesTables) -> tuple[list[Chain], list[str]]:
    """The chains, oldest root first (a fork starts after its source, so sources come first),
    and the sessions no chain reaches (their parent links loop)."""
    sessions = tables.sessions
    children: dict[str, list[HermesSession]] = {}
    for s in sessions.values():
        if s.parent_id in sessions and s.parent_id != s.id:
            children.setdefault(s.parent_id, []).append(s)
    continuation = {
        pid: _continuation(sessions[pid], kids, tables)
        for pid, kids in children.items()
        if sessions[pid].end_reason == COMPRESSION
    }
    continues = {s.id for s in continuation.values()}
    chains: list[Chain] = []
    seen: set[str] = set()
    for root in sessions.values():
        if root.id in continues:
            continue
        chain = [root]
        seen.add(root.id)
        while (nxt := continuation.get(chain[-1].id)) is not None and nxt.id not in seen:
            chain.append(nxt)
            seen.add(nxt.id)
        parent = root.parent_id if root.parent_id != root.id else None
        known = parent in sessions
        chains.append(
            Chain(chain, fork_of=parent if known else None, lost_parent=None if known else parent)
        )
    chains.sort(key=lambda c: (c.sessions[0].started_at, c.sessions[0].id))
    return chains, [sid for sid in sessions if sid not in seen]


def _continuation(
    parent: HermesSession, kids: list[HermesSession], tables: HermesTables
) -> HermesSession:
    """The child a compression continued in. Usually the only child; a session forked and
    later compressed has more: the one starting with a summary, right when the parent ended."""
    if len(kids) == 1:
        return kids[0]
    ended = parent.ended_at

    def rank(kid: HermesSession) -> tuple[bool, float, float]:
        rows = tables.rows.get(kid.id, [])[:_SUMMARY_PROBE]
        summary = any(isinstance(r.content, str) and is_summary(r.content) for r in rows)
        gap = abs(kid.started_at - ended) if ended is not None else 0.0
        return (not summary, gap, kid.started_at)

    return min(kids, key=rank)
