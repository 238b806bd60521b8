"""`read_hermes`: a Hermes Agent `state.db` as Tether conversations, read whole and checked
before anything is written (docs/hermes.md).

- a compression chain (root → child → … → the live tip) is one conversation: its id is the
  root's, every other session id of the chain is an alias, its messages are the chain's without
  the copies each child starts with, and each compaction summary is a checkpoint;
- an in-place compaction (rows set `active=0, compacted=1`, then a new generation) is read the
  same way: the originals, the new rows, never the copies;
- a fork is a Tether fork of its source's conversation: the copied prefix, then its own rows;
  forks come after the conversations they fork.

Pure: reads the file (never writes next to it) and returns records; `importing/write.py` stores
them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tether.importing.hermes_chains import Chain, chains_of
from tether.importing.hermes_db import HermesImportError, HermesSession, HermesTables, read_tables
from tether.importing.hermes_dedup import Built, common_prefix, extend
from tether.importing.hermes_rows import Item, Key, items_of
from tether.store.base import ImportedConversation

__all__ = ["HermesImport", "HermesImportError", "SkippedSession", "read_hermes"]

# the ids Tether accepts for a conversation or an alias (engine/ids.py, check_conversation_id)
VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ : -"
_METADATA = (  # sessions column → metadata key, taken from the tip (else the root) when set
    ("user_id", "hermes_user_id"),
    ("chat_id", "hermes_chat_id"),
    ("chat_type", "hermes_chat_type"),
    ("thread_id", "hermes_thread_id"),
    ("display_name", "hermes_display_name"),
    ("profile_name", "hermes_profile"),
)


@dataclass(frozen=True, slots=True)
class SkippedSession:
    session_id: str
    reason: str


@dataclass(slots=True)
class HermesImport:
    """What a file holds, ready to write: conversations in import order (a fork after the
    conversation it forks), the sessions left out and why, and notes on rows left out."""

    path: str
    conversations: list[ImportedConversation] = field(default_factory=list)
    skipped: list[SkippedSession] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sessions_read: int = 0
    rows_read: int = 0
    schema_version: int | None = None

    @property
    def messages(self) -> int:
        return sum(len(c.messages) for c in self.conversations)

    @property
    def aliases(self) -> int:
        return sum(len(c.aliases) for c in self.conversations)

    @property
    def checkpoints(self) -> int:
        return sum(len(c.checkpoints) for c in self.conversations)


@dataclass(slots=True)
class _Trace:
    """A session as imported: its conversation, and what Hermes shows of it now (its active
    rows' keys and the conversation seq each stands for), which a fork of it copied."""

    conversation_id: str
    built: Built
    keys: list[Key]
    seqs: list[int]


@dataclass(slots=True)
class _Reader:
    tables: HermesTables
    system_prompt: bool
    out: HermesImport
    traces: dict[str, _Trace] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)  # sessions imported or skipped

    def run(self, chains: list[Chain]) -> None:
        """Each chain once its fork source is done; a source that never is (a loop of forks)
        makes its forks plain conversations."""
        queue = chains
        while queue:
            ready = [c for c in queue if c.fork_of is None or c.fork_of in self.done]
            if not ready:
                first = queue[0]
                self.out.notes.append(f"{first.sessions[0].id}: its forks loop; imported unforked")
                first.fork_of = None
                ready = [first]
            for chain in ready:
                self.chain(chain)
            taken = {id(c) for c in ready}
            queue = [c for c in queue if id(c) not in taken]

    def chain(self, chain: Chain) -> None:
        ids = [s.id for s in chain.sessions]
        self.done.update(ids)
        valid = [sid for sid in ids if VALID_ID.fullmatch(sid)]
        if not valid:
            self._skip(ids, f"its id is not usable in Tether ({ID_RULE})")
            return
        for sid in ids:
            if sid not in valid:
                self.out.notes.append(
                    f"{sid}: not usable as a Tether id ({ID_RULE}); its messages are in "
                    f"{valid[0]}, but the id will not resolve"
                )
        built = self._build(chain, valid[0])
        if built is None:
            self._skip(ids, "no messages")
            return
        self.out.conversations.append(self._conversation(chain, valid, built))

    def _skip(self, ids: list[str], reason: str) -> None:
        self.out.skipped.extend(SkippedSession(sid, reason) for sid in ids)

    def _build(self, chain: Chain, conversation_id: str) -> _Built | None:
        model = _latest(chain.sessions, "model")
        parent = self.traces.get(chain.fork_of) if chain.fork_of else None
        built, fork = Built(), None
        traces: list[tuple[str, _Trace]] = []
        for n, session in enumerate(chain.sessions):
            items, dropped = items_of(self.tables.rows.get(session.id, []), session.started_at)
            self.out.notes.extend(dropped.notes(session.id))
            copied: list[int] = []
            if n == 0 and parent is not None:
                built, copied, fork = _fork_start(parent, items)
            seqs = copied + extend(built, items[len(copied) :], model)
            visible = [(it.key, q) for it, q in zip(items, seqs, strict=True) if it.active]
            trace = _Trace(conversation_id, built, [k for k, _ in visible], [q for _, q in visible])
            traces.append((session.id, trace))
        if not built.messages:
            return None
        self.traces.update(traces)
        return _Built(built, fork)

    def _conversation(self, chain: Chain, ids: list[str], b: _Built) -> ImportedConversation:
        root, sessions = chain.sessions[0], chain.sessions
        messages = b.built.messages
        created = root.started_at or messages[0].created_at
        return ImportedConversation(
            id=ids[0],
            aliases=ids[1:],
            title=_latest(sessions, "title"),
            model=_latest(sessions, "model"),
            system_prompt=_latest(sessions, "system_prompt") if self.system_prompt else None,
            metadata=self._metadata(chain),
            created_at=created,
            updated_at=max(created, messages[-1].created_at),
            messages=messages,
            checkpoints=b.built.checkpoints,
            forked_from=b.fork[0] if b.fork else None,
            forked_from_seq=b.fork[1] if b.fork else None,
        )

    def _metadata(self, chain: Chain) -> dict[str, str]:
        root, tip = chain.sessions[0], chain.sessions[-1]
        out = {"source": "hermes"}
        if root.info.get("source"):
            out["hermes_source"] = str(root.info["source"])
        for column, key in _METADATA:
            value = tip.info.get(column) or root.info.get(column)
            if value not in (None, ""):
                out[key] = str(value)
        if tip.end_reason:
            out["hermes_end_reason"] = str(tip.end_reason)
        if root.parent_id:
            out["hermes_parent_session_id"] = root.parent_id
        if self.tables.schema_version is not None:
            out["hermes_schema_version"] = str(self.tables.schema_version)
        return out


@dataclass(slots=True)
class _Built:
    built: Built
    fork: tuple[str, int] | None  # (the source's conversation id, the copied prefix's length)


def _fork_start(
    parent: _Trace, items: list[Item]
) -> tuple[Built, list[int], tuple[str, int] | None]:
    """A fork's first rows are copies of what its source showed when it forked: the longest
    common prefix with the source's active rows; the conversation starts as the source's
    messages 1..N that prefix stands for. Returns (the start, the copied rows' seqs, the fork)."""
    copied = common_prefix([it.key for it in items], parent.keys)
    seqs = parent.seqs[:copied]
    at = max(seqs, default=0)
    if at == 0:
        return Built(), [], None
    return parent.built.prefix(at), seqs, (parent.conversation_id, at)


def _latest(sessions: list[HermesSession], column: str) -> str | None:
    """The column's value on the newest session of the chain that has one."""
    for s in reversed(sessions):
        value = s.info.get(column)
        if value not in (None, ""):
            return str(value)
    return None


def read_hermes(path: str | Path, *, system_prompt: bool = True) -> HermesImport:
    """Read the file whole; HermesImportError (one line) if it is missing, not SQLite, damaged
    or not a Hermes state.db. `system_prompt=False` leaves Hermes' system prompts out."""
    tables = read_tables(Path(path))
    out = HermesImport(
        path=str(path),
        sessions_read=len(tables.sessions),
        rows_read=sum(len(r) for r in tables.rows.values()) + tables.orphan_rows,
        schema_version=tables.schema_version,
    )
    chains, unreached = chains_of(tables)
    reader = _Reader(tables, system_prompt, out)
    reader.run(chains)
    out.skipped.extend(SkippedSession(s, "its parent_session_id links loop") for s in unreached)
    lost = [c for c in chains if c.lost_parent]
    out.notes.extend(
        f"{c.sessions[0].id}: its parent session {c.lost_parent} is not in the file" for c in lost
    )
    if tables.orphan_rows:
        out.notes.append(f"{tables.orphan_rows} row(s) of sessions not in the sessions table")
    return out
