"""PostgreSQL: the statements of the transactions that take more than one line (a turn's commit
above all), on the connection and inside the transaction the store opened. Column lists and
row mappers are the SQLite store's (store/sqlite_sql.py): the columns are the same, and JSON
values are stored as the same text."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

from tether.model import Checkpoint, Conversation, Message, ToolStep, Turn
from tether.store.base import NewConversation, TurnCommit
from tether.store.errors import ConflictError
from tether.store.postgres import search
from tether.store.postgres.db import Conn, rowcount
from tether.store.sqlite_sql import (
    CKPT_COLS,
    CONV_COLS,
    CONV_FROM,
    MSG_COLS,
    TOOL_STEP_COLS,
    conversation_row,
    dumps,
)

# the conversation a statement's CTE `u` returns (UPDATE … RETURNING *), with its parent's id
RETURNED = f"SELECT {CONV_COLS} FROM u c LEFT JOIN conversations p ON p.pk = c.forked_from_pk"
MSG_ARRAYS = (
    "$1::bigint, s, r, ct, tc, tci, n, x, tk, $2::text, at FROM unnest($3::int[], $4::text[], "
    "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::int[], $11::float8[]) "
    "AS m(s, r, ct, tc, tci, n, x, tk, at)"
)


def conversation(row: Any) -> Conversation:
    return conversation_row(tuple(row))


async def by_pk(c: Conn, pk: int, lock: str = "") -> Conversation:
    """The conversation (ConflictError if there is none); `lock`: FOR UPDATE or FOR SHARE."""
    # a lock takes the row itself first (a lock on a LEFT JOIN's nullable side is refused)
    locked = lock and await c.fetchval(f"SELECT 1 FROM conversations WHERE pk = $1 {lock}", pk)
    if lock and locked is None:
        raise ConflictError(f"conversation {pk} does not exist")
    row = await c.fetchrow(f"SELECT {CONV_COLS} FROM {CONV_FROM} WHERE c.pk = $1", pk)
    if row is None:
        raise ConflictError(f"conversation {pk} does not exist")
    return conversation(row)


async def resolve(c: Conn, tenant_id: str, conversation_id: str) -> Conversation | None:
    row = await c.fetchrow(
        f"SELECT {CONV_COLS} FROM {CONV_FROM} WHERE c.pk = coalesce("
        "(SELECT pk FROM conversations WHERE tenant_id = $1 AND id = $2), "
        "(SELECT conversation_pk FROM conversation_aliases WHERE tenant_id = $1 AND alias = $2))",
        tenant_id,
        conversation_id,
    )
    return None if row is None else conversation(row)


async def insert_messages(
    c: Conn,
    pk: int,
    tenant_id: str,
    first_seq: int,
    messages: list[Message],
    turn_id: str | None,
    at: float | None,
) -> int:
    """Messages from `first_seq` on (created at `at`, or each at its own time) and their search
    rows, in one statement; how many."""
    if not messages:
        return 0
    rowids, bodies, cjk = search.rows_of(pk, first_seq, messages)
    await c.execute(
        f"WITH m AS (INSERT INTO messages (conversation_pk, {MSG_COLS}) SELECT {MSG_ARRAYS}) "
        f"{search.INSERT} SELECT r, $12, b, k "
        "FROM unnest($13::bigint[], $14::text[], $15::bool[]) AS t(r, b, k)",
        pk,
        turn_id,
        list(range(first_seq, first_seq + len(messages))),
        [m.role for m in messages],
        [dumps(m.content) for m in messages],
        [dumps(m.tool_calls) for m in messages],
        [m.tool_call_id for m in messages],
        [m.name for m in messages],
        [dumps(m.extra) for m in messages],
        [m.tokens for m in messages],
        [at if at is not None else m.created_at for m in messages],
        tenant_id,
        rowids,
        bodies,
        cjk,
    )
    return len(messages)


async def insert_checkpoint(c: Conn, pk: int, cp: Checkpoint) -> None:
    await c.execute(
        f"INSERT INTO checkpoints (conversation_pk, {CKPT_COLS}) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
        pk, cp.epoch, cp.covers_through_seq, cp.prune_through_seq, cp.summary, dumps(cp.ledger),
        cp.tokens_before, cp.tokens_after, cp.model, cp.prompt_version, dumps(cp.stats),
        cp.turn_id, cp.created_at or time.time(),
    )  # fmt: skip
    if cp.summary:
        await search.index_summary(c, pk, cp.epoch, cp.summary)


TURN_COLS_WRITTEN = (
    "id, conversation_pk, status, model, stream, prompt_tokens, completion_tokens, usage, error, "
    "first_seq, last_seq, compacted, notes, started_at, first_token_at, finished_at, owner"
)
# insert or replace a turn's record ($1..$17: turn_args)
TURN_SQL = (
    f"INSERT INTO turns ({TURN_COLS_WRITTEN}) VALUES ("
    + ",".join(f"${i}" for i in range(1, 18))
    + ") ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{col} = EXCLUDED.{col}" for col in TURN_COLS_WRITTEN.split(", ")[1:])
)


def turn_args(
    pk: int, turn: Turn, span: tuple[int | None, int | None], owner: str | None
) -> tuple[Any, ...]:
    """TURN_SQL's values (`span`: the turn's first and last seq, once committed)."""
    usage = turn.usage or {}
    return (
        turn.id, pk, turn.status, turn.model, turn.stream, _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")), dumps(turn.usage), dumps(turn.error), span[0],
        span[1], turn.compacted, dumps(turn.notes), turn.started_at, turn.first_token_at,
        turn.finished_at, owner,
    )  # fmt: skip


async def insert_turn(
    c: Conn, pk: int, turn: Turn, span: tuple[int | None, int | None], owner: str | None
) -> None:
    await c.execute(TURN_SQL, *turn_args(pk, turn, span, owner))


def shifted(statement: str, by: int) -> str:
    """The statement with its placeholders renumbered ($1 → $(1 + by)), to follow others."""
    return re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + by}", statement)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def commit_turn(c: Conn, commit: TurnCommit, owner: str | None) -> Conversation:
    """A turn's messages, its record and the conversation's new state (and a keyed turn's
    stored response); ConflictError, writing nothing, if the conversation moved on."""
    now = time.time()
    new = commit.new_conversation
    if new is not None:
        pk, last_seq = await _create_conversation(c, commit, new, now)
    else:
        pk, last_seq = await _current(c, commit)
    added = await insert_messages(
        c, pk, commit.tenant_id, last_seq + 1, commit.messages, commit.turn.id, now
    )
    new_last = last_seq + added
    if commit.response is not None:
        r = commit.response
        await c.execute(
            "UPDATE idempotency_keys SET status = 'completed', stream = $1, response = $2, "
            "headers = $3, completed_at = $4, conversation_pk = $5 "
            "WHERE tenant_id = $6 AND route = $7 AND key = $8",
            r.stream, r.response, dumps(r.headers), now, pk, r.key.tenant_id, r.key.route,
            r.key.key,
        )  # fmt: skip
    span = (last_seq + 1, new_last) if added else (None, None)
    return await _advance(c, commit, pk, (new_last, now), turn_args(pk, commit.turn, span, owner))


async def _create_conversation(
    c: Conn, commit: TurnCommit, new: NewConversation, now: float
) -> tuple[int, int]:
    """Insert the commit's new conversation (a fork: with its parent's prefix and inherited
    checkpoint); its pk and last seq. A taken id is a unique violation: ConflictError."""
    await ensure_tenant(c, commit.tenant_id, now)
    pk = int(
        await c.fetchval(
            "INSERT INTO conversations (tenant_id, id, title, model, system_prompt, "
            "forked_from_pk, forked_from_seq, created_at, updated_at) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$8) RETURNING pk",
            commit.tenant_id,
            new.id,
            new.title,
            new.model,
            commit.system_prompt,
            new.forked_from_pk,
            new.forked_from_seq,
            now,
        )
    )
    last_seq = 0
    if new.forked_from_pk is not None and new.forked_from_seq:
        copied = await copy_prefix(c, new.forked_from_pk, pk, new.forked_from_seq)
        if copied != new.forked_from_seq:
            raise ConflictError(
                f"cannot fork at seq {new.forked_from_seq}: the parent has {copied} messages"
            )
        last_seq = new.forked_from_seq
    if commit.inherit_checkpoint is not None:
        await insert_checkpoint(c, pk, replace(commit.inherit_checkpoint, epoch=1))
        await c.execute("UPDATE conversations SET epoch = 1 WHERE pk = $1", pk)
    return pk, last_seq


async def copy_prefix(c: Conn, from_pk: int, to_pk: int, through_seq: int) -> int:
    """A fork's copies of its parent's messages 1..through_seq and their search rows; how many
    messages were copied."""
    status = await c.execute(
        f"INSERT INTO messages (conversation_pk, {MSG_COLS}) "
        f"SELECT $1, {MSG_COLS} FROM messages WHERE conversation_pk = $2 AND seq <= $3",
        to_pk,
        from_pk,
        through_seq,
    )
    await search.copy_messages(c, from_pk, to_pk, through_seq)
    return rowcount(status)


async def ensure_tenant(c: Conn, tenant_id: str, now: float) -> None:
    await c.execute(
        "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        tenant_id,
        now,
    )


async def _current(c: Conn, commit: TurnCommit) -> tuple[int, int]:
    """The commit's existing conversation (pk, last seq), locked until the commit ends, if it
    is where the turn read it: a concurrent commit waits here, then sees the new last seq."""
    assert commit.conversation_pk is not None
    pk = commit.conversation_pk
    last_seq = await c.fetchval("SELECT last_seq FROM conversations WHERE pk = $1 FOR UPDATE", pk)
    if last_seq is None:
        raise ConflictError(f"conversation {pk} does not exist")
    if last_seq != commit.expected_last_seq:
        raise ConflictError(
            f"conversation moved on: last seq {last_seq}, expected {commit.expected_last_seq}"
        )
    return pk, int(last_seq)


async def _advance(
    c: Conn, commit: TurnCommit, pk: int, at: tuple[int, float], turn: tuple[Any, ...]
) -> Conversation:
    """The turn's record (`turn`: turn_args) and the conversation after the turn: its last seq
    (`at[0]`), turn count, model, usage, hash (and a changed system prompt), returned as it is
    now; one statement."""
    new_last, now = at
    usage = commit.turn.usage or {}
    # the upstream's count is the truth the next turn's estimate builds on; Tether's own
    # estimate (an upstream that sent no usage) is not
    prompt_tokens = None if usage.get("estimated") else _int(usage.get("prompt_tokens"))
    changed = commit.system_changed and commit.new_conversation is None
    row = await c.fetchrow(
        f"WITH t AS ({shifted(TURN_SQL, 11)}), "
        "u AS (UPDATE conversations SET last_seq = $2, turn_count = turn_count + 1, "
        "updated_at = $3, model = COALESCE($4, model), usage_prompt_tokens = $5, "
        "usage_through_seq = $6, usage_epoch = $7, history_hash = $8, history_len = $9, "
        "system_prompt = CASE WHEN $10 THEN $11 ELSE system_prompt END "
        f"WHERE pk = $1 RETURNING *) {RETURNED}",
        pk, new_last, now, commit.turn.model, prompt_tokens, new_last - 1, commit.view_epoch,
        commit.history_hash, commit.history_len, changed, commit.system_prompt, *turn,
    )  # fmt: skip
    return conversation(row)


async def insert_tool_step(c: Conn, step: ToolStep) -> None:
    replaced = ", ".join(f"{col} = EXCLUDED.{col}" for col in TOOL_STEP_COLS.split(", ")[2:])
    await c.execute(
        f"INSERT INTO tool_steps ({TOOL_STEP_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,"
        f"$12) ON CONFLICT (turn_id, call_id) DO UPDATE SET {replaced}",
        step.turn_id, step.call_id, step.tenant_id, step.conversation_id, step.round, step.tool,
        step.source, step.arguments, step.status, step.output_chars, step.started_at,
        step.finished_at,
    )  # fmt: skip


async def tool_steps(c: Conn, turn_id: str) -> list[ToolStep]:
    rows = await c.fetch(
        f"SELECT {TOOL_STEP_COLS} FROM tool_steps WHERE turn_id = $1 ORDER BY round, started_at",
        turn_id,
    )
    names = TOOL_STEP_COLS.split(", ")
    return [ToolStep(**dict(zip(names, r, strict=True))) for r in rows]
