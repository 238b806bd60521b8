"""The SQL behind the SQLite store: column lists, row mappers, and the statements of the
transactions that take more than one line. Every function runs on a store thread with the
connection it is given, inside the transaction the store opened."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from typing import Any

import orjson

from tether.model import Checkpoint, Conversation, Message, ToolStep, Turn
from tether.store import sqlite_backlog, sqlite_search
from tether.store.base import NewConversation, TurnCommit
from tether.store.errors import ConflictError

CONV_COLS = (
    "c.pk, c.id, c.tenant_id, c.title, c.model, c.system_prompt, c.last_seq, c.turn_count, "
    "c.epoch, c.usage_prompt_tokens, c.usage_through_seq, c.usage_epoch, p.id, "
    "c.forked_from_seq, c.created_at, c.updated_at, c.history_hash, c.history_len, "
    "c.forked_from_pk, c.metadata"
)
CONV_FROM = "conversations c LEFT JOIN conversations p ON p.pk = c.forked_from_pk"
# a new conversation's pk: never one a deleted conversation had (migration 0007)
NEXT_PK = (
    "(SELECT max(coalesce((SELECT max(pk) FROM conversations), 0), "
    "(SELECT floor FROM conversation_pk_floor)) + 1)"
)
MSG_COLS = "seq, role, content, tool_calls, tool_call_id, name, extra, tokens, turn_id, created_at"


CKPT_COLS = (
    "epoch, covers_through_seq, prune_through_seq, summary, ledger, tokens_before, tokens_after, "
    "model, prompt_version, stats, turn_id, created_at"
)


def checkpoint_row(row: tuple[Any, ...]) -> Checkpoint:
    epoch, covers, prune, summary, ledger, before, after, model, version, stats, turn, at = row
    return Checkpoint(
        epoch=epoch,
        covers_through_seq=covers,
        prune_through_seq=prune,
        summary=summary,
        ledger=loads(ledger) or [],
        tokens_before=before,
        tokens_after=after,
        model=model,
        prompt_version=version,
        stats=loads(stats) or {},
        turn_id=turn,
        created_at=at,
    )


TURN_COLS = (
    "id, status, model, stream, started_at, finished_at, first_token_at, usage, error, "
    "compacted, notes, first_seq, last_seq"
)


def turn_row(row: tuple[Any, ...], conversation_id: str) -> Turn:
    tid, status, model, stream, started, finished, first_token, usage, error = row[:9]
    compacted, notes, first_seq, last_seq = row[9:]
    return Turn(
        id=tid,
        status=status,
        model=model,
        stream=bool(stream),
        started_at=started,
        finished_at=finished,
        first_token_at=first_token,
        usage=loads(usage),
        error=loads(error),
        compacted=bool(compacted),
        notes=loads(notes),
        conversation_id=conversation_id,
        first_seq=first_seq,
        last_seq=last_seq,
    )


def dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def conversation_row(row: tuple[Any, ...]) -> Conversation:
    if row[-1] is None:
        return Conversation(*row)
    # mypy cannot see that the star covers every field but `metadata`
    return Conversation(*row[:-1], metadata=orjson.loads(row[-1]))  # type: ignore[misc]


def message_row(row: tuple[Any, ...]) -> Message:
    seq, role, content, tool_calls, tool_call_id, name, extra, tokens, turn_id, created = row
    return Message(  # positional: the hot path of a turn that reads its conversation
        role,
        None if content is None else orjson.loads(content),
        None if tool_calls is None else orjson.loads(tool_calls),
        tool_call_id,
        name,
        None if extra is None else orjson.loads(extra),
        tokens,
        seq,
        turn_id,
        created,
    )


def resolve(c: sqlite3.Connection, tenant_id: str, conversation_id: str) -> Conversation | None:
    row = c.execute(
        f"SELECT {CONV_COLS} FROM {CONV_FROM} WHERE c.tenant_id = ? AND c.id = ?",
        (tenant_id, conversation_id),
    ).fetchone()
    if row is None:
        row = c.execute(
            f"SELECT {CONV_COLS} FROM conversation_aliases a "
            "JOIN conversations c ON c.pk = a.conversation_pk "
            "LEFT JOIN conversations p ON p.pk = c.forked_from_pk "
            "WHERE a.tenant_id = ? AND a.alias = ?",
            (tenant_id, conversation_id),
        ).fetchone()
    return None if row is None else conversation_row(row)


def insert_checkpoint(c: sqlite3.Connection, conversation_pk: int, cp: Checkpoint) -> None:
    c.execute(
        f"INSERT INTO checkpoints (conversation_pk, {CKPT_COLS}) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            conversation_pk,
            cp.epoch,
            cp.covers_through_seq,
            cp.prune_through_seq,
            cp.summary,
            dumps(cp.ledger),
            cp.tokens_before,
            cp.tokens_after,
            cp.model,
            cp.prompt_version,
            dumps(cp.stats),
            cp.turn_id,
            cp.created_at or time.time(),
        ),
    )
    if cp.summary:
        sqlite_search.index_summary(c, conversation_pk, cp.epoch, cp.summary)


def insert_turn(
    c: sqlite3.Connection,
    conversation_pk: int,
    turn: Turn,
    first_seq: int | None,
    last_seq: int | None,
    owner: str | None,
) -> None:
    usage = turn.usage or {}
    c.execute(
        "INSERT OR REPLACE INTO turns (id, conversation_pk, status, model, stream, prompt_tokens, "
        "completion_tokens, usage, error, first_seq, last_seq, compacted, notes, started_at, "
        "first_token_at, finished_at, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            turn.id,
            conversation_pk,
            turn.status,
            turn.model,
            int(turn.stream),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            dumps(turn.usage),
            dumps(turn.error),
            first_seq,
            last_seq,
            int(turn.compacted),
            dumps(turn.notes),
            turn.started_at,
            turn.first_token_at,
            turn.finished_at,
            owner,
        ),
    )


def commit_turn(c: sqlite3.Connection, commit: TurnCommit, owner: str | None) -> Conversation:
    """A turn's messages, its record and the conversation's new state (and a keyed turn's
    stored response); ConflictError, writing nothing, if the conversation moved on."""
    now = time.time()
    new = commit.new_conversation
    if new is not None:
        pk, last_seq = _create_conversation(c, commit, new, now)
    else:
        pk, last_seq = _current(c, commit)
    added = _insert_messages(c, commit, pk, last_seq + 1, now)
    new_last = last_seq + added
    if commit.system_changed and new is None:
        c.execute(
            "UPDATE conversations SET system_prompt = ? WHERE pk = ?", (commit.system_prompt, pk)
        )
    _advance(c, commit, pk, new_last, now)
    if added:
        insert_turn(c, pk, commit.turn, last_seq + 1, new_last, owner)
    else:
        insert_turn(c, pk, commit.turn, None, None, owner)
    if commit.response is not None:
        r = commit.response
        c.execute(
            "UPDATE idempotency_keys SET status = 'completed', stream = ?, response = ?, "
            "headers = ?, completed_at = ?, conversation_pk = ? "
            "WHERE tenant_id = ? AND route = ? AND key = ?",
            (int(r.stream), r.response, dumps(r.headers), now, pk,
             r.key.tenant_id, r.key.route, r.key.key),
        )  # fmt: skip
    row = c.execute(f"SELECT {CONV_COLS} FROM {CONV_FROM} WHERE c.pk = ?", (pk,)).fetchone()
    return conversation_row(row)


def _create_conversation(
    c: sqlite3.Connection, commit: TurnCommit, new: NewConversation, now: float
) -> tuple[int, int]:
    """Insert the commit's new conversation (a fork: with its parent's prefix and inherited
    checkpoint); its pk and last seq."""
    c.execute(
        "INSERT OR IGNORE INTO tenants (id, created_at) VALUES (?, ?)", (commit.tenant_id, now)
    )
    try:
        cur = c.execute(
            "INSERT INTO conversations (pk, tenant_id, id, title, model, system_prompt, "
            f"forked_from_pk, forked_from_seq, created_at, updated_at) VALUES ({NEXT_PK},"
            "?,?,?,?,?,?,?,?,?)",
            (commit.tenant_id, new.id, new.title, new.model, commit.system_prompt,
             new.forked_from_pk, new.forked_from_seq, now, now),
        )  # fmt: skip
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"conversation {new.id!r} already exists") from exc
    pk = int(cur.lastrowid or 0)
    last_seq = 0
    if new.forked_from_pk is not None and new.forked_from_seq:
        copied = c.execute(
            f"INSERT INTO messages (conversation_pk, {MSG_COLS}) "
            f"SELECT ?, {MSG_COLS} FROM messages WHERE conversation_pk = ? AND seq <= ?",
            (pk, new.forked_from_pk, new.forked_from_seq),
        ).rowcount
        if copied != new.forked_from_seq:
            raise ConflictError(
                f"cannot fork at seq {new.forked_from_seq}: the parent has {copied} messages"
            )
        sqlite_backlog.drain(c, new.forked_from_pk)  # its rows indexed, then copied
        sqlite_search.copy_messages(c, new.forked_from_pk, pk, new.forked_from_seq)
        last_seq = new.forked_from_seq
    if commit.inherit_checkpoint is not None:
        insert_checkpoint(c, pk, replace(commit.inherit_checkpoint, epoch=1))
        c.execute("UPDATE conversations SET epoch = 1 WHERE pk = ?", (pk,))
    return pk, last_seq


def _current(c: sqlite3.Connection, commit: TurnCommit) -> tuple[int, int]:
    """The commit's existing conversation (pk, last seq), if it is where the turn read it."""
    assert commit.conversation_pk is not None
    pk = commit.conversation_pk
    row = c.execute("SELECT last_seq FROM conversations WHERE pk = ?", (pk,)).fetchone()
    if row is None:
        raise ConflictError(f"conversation {pk} does not exist")
    last_seq = int(row[0])
    if last_seq != commit.expected_last_seq:
        raise ConflictError(
            f"conversation moved on: last seq {last_seq}, expected {commit.expected_last_seq}"
        )
    return pk, last_seq


def _insert_messages(
    c: sqlite3.Connection, commit: TurnCommit, pk: int, first_seq: int, now: float
) -> int:
    """The turn's messages from `first_seq` on; how many."""
    turn_id = commit.turn.id
    rows = [
        (pk, first_seq + offset, m.role, dumps(m.content), dumps(m.tool_calls), m.tool_call_id,
         m.name, dumps(m.extra), m.tokens, turn_id, now)
        for offset, m in enumerate(commit.messages)
    ]  # fmt: skip
    c.executemany(
        f"INSERT INTO messages (conversation_pk, {MSG_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    if rows:  # indexed for search a moment later, in a batch (store/sqlite_backlog.py)
        c.execute(
            "INSERT INTO search_backlog (conversation_pk, first_seq, last_seq) VALUES (?, ?, ?)",
            (pk, first_seq, first_seq + len(rows) - 1),
        )
    return len(rows)


def _advance(c: sqlite3.Connection, commit: TurnCommit, pk: int, new_last: int, now: float) -> None:
    """The conversation after the turn: its last seq, turn count, model, usage and hash."""
    usage = commit.turn.usage or {}
    # the upstream's count is the truth the next turn's estimate builds on; Tether's own
    # estimate (an upstream that sent no usage) is not
    prompt_tokens = None if usage.get("estimated") else usage.get("prompt_tokens")
    c.execute(
        "UPDATE conversations SET last_seq = ?, turn_count = turn_count + 1, updated_at = ?, "
        "model = COALESCE(?, model), usage_prompt_tokens = ?, usage_through_seq = ?, "
        "usage_epoch = ?, history_hash = ?, history_len = ? WHERE pk = ?",
        (
            new_last,
            now,
            commit.turn.model,
            prompt_tokens if isinstance(prompt_tokens, int) else None,
            new_last - 1,
            commit.view_epoch,
            commit.history_hash,
            commit.history_len,
            pk,
        ),
    )


TOOL_STEP_COLS = (
    "turn_id, call_id, tenant_id, conversation_id, round, tool, source, arguments, status, "
    "output_chars, started_at, finished_at"
)


def insert_tool_step(c: sqlite3.Connection, step: ToolStep) -> None:
    c.execute(
        f"INSERT OR REPLACE INTO tool_steps ({TOOL_STEP_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            step.turn_id,
            step.call_id,
            step.tenant_id,
            step.conversation_id,
            step.round,
            step.tool,
            step.source,
            step.arguments,
            step.status,
            step.output_chars,
            step.started_at,
            step.finished_at,
        ),
    )


def tool_steps(c: sqlite3.Connection, turn_id: str) -> list[ToolStep]:
    rows = c.execute(
        f"SELECT {TOOL_STEP_COLS} FROM tool_steps WHERE turn_id = ? ORDER BY round, started_at",
        (turn_id,),
    ).fetchall()
    return [
        ToolStep(
            turn_id=r[0],
            call_id=r[1],
            tenant_id=r[2],
            conversation_id=r[3],
            round=r[4],
            tool=r[5],
            source=r[6],
            arguments=r[7],
            status=r[8],
            output_chars=r[9],
            started_at=r[10],
            finished_at=r[11],
        )
        for r in rows
    ]
