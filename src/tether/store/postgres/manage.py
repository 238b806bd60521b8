"""PostgreSQL: conversation management (listing with filters and keyset pages, update, delete,
fork, import, aliases, turns, notes), each inside the transaction (or read) the store opened.
A write that depends on a conversation's state locks its row first (FOR UPDATE), so a
concurrent turn's commit waits for it, then sees what it did."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from tether.model import REMOVED, Checkpoint, Conversation, Turn
from tether.store.base import ConversationFilter, ImportedConversation
from tether.store.errors import ConflictError
from tether.store.postgres import search
from tether.store.postgres.db import Conn, rowcount
from tether.store.postgres.sql import (
    RETURNED,
    by_pk,
    copy_prefix,
    ensure_tenant,
    insert_checkpoint,
    insert_messages,
    resolve,
)
from tether.store.sqlite_sql import (
    CKPT_COLS,
    CONV_COLS,
    CONV_FROM,
    TURN_COLS,
    checkpoint_row,
    conversation_row,
    dumps,
    turn_row,
)


async def list_conversations(
    c: Conn,
    tenant_id: str,
    limit: int,
    after: Conversation | None,
    filters: ConversationFilter | None,
) -> list[Conversation]:
    params: list[Any] = [tenant_id, max(0, limit)]
    where = search.filter_sql(filters, params)
    if after is not None:  # (updated_at, pk) strictly below the last one listed
        params += [after.updated_at, after.pk]
        n = len(params)
        where += f" AND (c.updated_at, c.pk) < (${n - 1}::float8, ${n}::bigint)"
    rows = await c.fetch(
        f"SELECT {CONV_COLS} FROM {CONV_FROM} WHERE c.tenant_id = $1{where} "
        "ORDER BY c.updated_at DESC, c.pk DESC LIMIT $2",
        *params,
    )
    return [conversation_row(tuple(r)) for r in rows]


async def update(
    c: Conn,
    pk: int,
    title: str | None,
    clear_title: bool,
    metadata: dict[str, str] | None,
    expected_last_seq: int | None,
) -> Conversation:
    conv = await by_pk(c, pk, "FOR UPDATE")
    if expected_last_seq is not None and conv.last_seq != expected_last_seq:
        raise ConflictError(
            f"conversation moved on: last seq {conv.last_seq}, expected {expected_last_seq}"
        )
    row = await c.fetchrow(
        "WITH u AS (UPDATE conversations SET title = CASE WHEN $2 THEN $3 ELSE title END, "
        "metadata = CASE WHEN $4 THEN $5 ELSE metadata END WHERE pk = $1 RETURNING *) " + RETURNED,
        pk,
        title is not None or clear_title,
        title,
        metadata is not None,
        dumps(metadata or None),
    )
    return conversation_row(tuple(row))


async def remove(c: Conn, pk: int, seqs: list[int], at: float) -> int:
    await by_pk(c, pk, "FOR UPDATE")
    marked = rowcount(
        await c.execute(
            "UPDATE messages SET extra = (coalesce(extra, '{}')::jsonb || "
            "jsonb_build_object($4::text, $3::jsonb))::text "
            "WHERE conversation_pk = $1 AND seq = ANY($2::int[]) "
            "AND (extra IS NULL OR (extra::jsonb ->> $4::text) IS NULL)",
            pk,
            sorted(set(seqs)),
            dumps(at),
            REMOVED,
        )
    )
    if marked:
        await c.execute("UPDATE conversations SET updated_at = $2 WHERE pk = $1", pk, at)
    return marked


async def delete(c: Conn, pk: int) -> dict[str, int]:
    """Everything the conversation owns, gone; its forks keep their copied rows."""
    await by_pk(c, pk, "FOR UPDATE")
    removed = {
        "tool_steps": rowcount(
            await c.execute(
                "DELETE FROM tool_steps WHERE turn_id IN "
                "(SELECT id FROM turns WHERE conversation_pk = $1)",
                pk,
            )
        ),
        "search_rows": await search.drop(c, pk),
    }
    for table in ("messages", "checkpoints", "turns", "idempotency_keys", "conversation_aliases"):
        status = await c.execute(f"DELETE FROM {table} WHERE conversation_pk = $1", pk)
        removed[table] = rowcount(status)
    await c.execute("UPDATE conversations SET forked_from_pk = NULL WHERE forked_from_pk = $1", pk)
    status = await c.execute("DELETE FROM conversations WHERE pk = $1", pk)
    removed["conversations"] = rowcount(status)
    return removed


async def _insert_conversation(
    c: Conn,
    tenant_id: str,
    conv_id: str,
    fields: tuple[str | None, str | None, str | None, dict[str, str] | None],
    fork: tuple[int | None, int | None],
    times: tuple[float, float],
) -> int:
    title, model, system_prompt, metadata = fields
    await ensure_tenant(c, tenant_id, times[0])
    pk = await c.fetchval(
        "INSERT INTO conversations (tenant_id, id, title, model, system_prompt, metadata, "
        "forked_from_pk, forked_from_seq, created_at, updated_at) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING pk",
        tenant_id, conv_id, title, model, system_prompt, dumps(metadata or None), fork[0],
        fork[1], times[0], times[1],
    )  # fmt: skip
    return int(pk)


async def fork(c: Conn, tenant_id: str, pk: int, at_seq: int, new_id: str) -> Conversation:
    parent = await by_pk(c, pk, "FOR SHARE")
    if not 1 <= at_seq <= parent.last_seq:
        raise ConflictError(f"cannot fork at seq {at_seq}: the conversation has {parent.last_seq}")
    if await resolve(c, tenant_id, new_id) is not None:
        raise ConflictError(f"conversation {new_id!r} already exists")
    now = time.time()
    fields = (parent.title, parent.model, parent.system_prompt, parent.metadata)
    new_pk = await _insert_conversation(c, tenant_id, new_id, fields, (pk, at_seq), (now, now))
    await copy_prefix(c, pk, new_pk, at_seq)
    row = await c.fetchrow(
        f"SELECT {CKPT_COLS} FROM checkpoints WHERE conversation_pk = $1 "
        "AND covers_through_seq <= $2 AND prune_through_seq <= $2 ORDER BY epoch DESC LIMIT 1",
        pk,
        at_seq,
    )
    epoch = 0
    if row is not None:  # the latest compaction within the copied prefix stays in force
        await insert_checkpoint(c, new_pk, replace(checkpoint_row(tuple(row)), epoch=1))
        epoch = 1
    await c.execute(
        "UPDATE conversations SET last_seq = $2, epoch = $3 WHERE pk = $1", new_pk, at_seq, epoch
    )
    return await by_pk(c, new_pk)


async def _taken(c: Conn, tenant_id: str, names: list[str]) -> bool:
    found = await c.fetchval(
        "SELECT EXISTS (SELECT 1 FROM conversations WHERE tenant_id = $1 AND id = ANY($2)) "
        "OR EXISTS (SELECT 1 FROM conversation_aliases WHERE tenant_id = $1 AND alias = ANY($2))",
        tenant_id,
        names,
    )
    return bool(found)


async def import_conversation(
    c: Conn, tenant_id: str, conv: ImportedConversation
) -> Conversation | None:
    if await _taken(c, tenant_id, [conv.id, *conv.aliases]):
        return None
    parent = await resolve(c, tenant_id, conv.forked_from) if conv.forked_from else None
    fields = (conv.title, conv.model, conv.system_prompt, conv.metadata)
    fork_of = (parent.pk, conv.forked_from_seq) if parent else (None, None)
    times = (conv.created_at, conv.updated_at)
    pk = await _insert_conversation(c, tenant_id, conv.id, fields, fork_of, times)
    messages = [replace(m, created_at=m.created_at or conv.created_at) for m in conv.messages]
    n = await insert_messages(c, pk, tenant_id, 1, messages, None, None)
    for epoch, cp in enumerate(conv.checkpoints, 1):
        covers = min(cp.covers_through_seq, n)
        await insert_checkpoint(
            c,
            pk,
            Checkpoint(
                epoch=epoch, covers_through_seq=covers, prune_through_seq=covers,
                summary=cp.summary, ledger=[], tokens_before=cp.tokens_before,
                tokens_after=cp.tokens_after, model=cp.model, prompt_version="import",
                stats={"imported": True}, created_at=cp.created_at,
            ),
        )  # fmt: skip
    if conv.aliases:
        await c.execute(
            "INSERT INTO conversation_aliases (tenant_id, alias, conversation_pk, created_at) "
            "SELECT $1, a, $3, $4 FROM unnest($2::text[]) AS t(a)",
            tenant_id,
            conv.aliases,
            pk,
            conv.created_at,
        )
    await c.execute(
        "UPDATE conversations SET last_seq = $2, epoch = $3 WHERE pk = $1",
        pk,
        n,
        len(conv.checkpoints),
    )
    return await by_pk(c, pk)


async def aliases(c: Conn, pk: int) -> list[str]:
    rows = await c.fetch(
        "SELECT alias FROM conversation_aliases WHERE conversation_pk = $1 "
        "ORDER BY created_at, alias",
        pk,
    )
    return [str(r[0]) for r in rows]


async def turns(c: Conn, pk: int, limit: int) -> list[Turn]:
    conv_id = (await by_pk(c, pk)).id
    rows = await c.fetch(
        f"SELECT {TURN_COLS} FROM turns WHERE conversation_pk = $1 "
        "ORDER BY started_at DESC LIMIT $2",
        pk,
        max(0, limit),
    )
    return [turn_row(tuple(r), conv_id) for r in rows]


async def note_turn(c: Conn, tenant_id: str, turn_id: str, key: str, value: Any) -> bool:
    status = await c.execute(
        "UPDATE turns SET notes = (coalesce(notes, '{}')::jsonb || "
        "jsonb_build_object($1::text, $2::jsonb))::text "
        "WHERE id = $3 AND conversation_pk IN (SELECT pk FROM conversations WHERE tenant_id = $4)",
        key,
        dumps(value),
        turn_id,
        tenant_id,
    )
    return rowcount(status) > 0


async def find_turn(c: Conn, tenant_id: str, turn_id: str) -> Turn | None:
    cols = ", ".join("t." + col for col in TURN_COLS.split(", "))
    row = await c.fetchrow(
        f"SELECT {cols}, c.id FROM turns t JOIN conversations c ON c.pk = t.conversation_pk "
        "WHERE t.id = $1 AND c.tenant_id = $2",
        turn_id,
        tenant_id,
    )
    return None if row is None else turn_row(tuple(row)[:-1], row[-1])


async def latest_checkpoint(c: Conn, pk: int) -> Checkpoint | None:
    row = await c.fetchrow(
        f"SELECT {CKPT_COLS} FROM checkpoints WHERE conversation_pk = $1 "
        "ORDER BY epoch DESC LIMIT 1",
        pk,
    )
    return None if row is None else checkpoint_row(tuple(row))
