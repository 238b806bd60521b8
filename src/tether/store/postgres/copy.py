"""`tether migrate --from sqlite:///… --database postgresql://…`: a SQLite database copied into
PostgreSQL, every table's rows with their keys (conversation pks too), the search index built
from the copied text as postgres/search.py indexes a commit, the identity sequences moved past
the copied pks (and SQLite's pk floor: a deleted conversation's pk is never given again).

The source is read through plain `sqlite3` in `mode=ro`, inside one read transaction (one
snapshot for the whole run; a running `tether serve` may hold the file). Resumable: tenants
and API keys go first (inserted unless there, then compared); then each conversation, in pk
order, in one PostgreSQL transaction with everything it owns (aliases, messages, checkpoints,
turns, their tool steps, idempotency records, search rows). A conversation already in the
target with the same row is skipped; an interrupted run left each conversation whole or absent,
so running again continues where it stopped. Idempotency records and tool steps of no copied
conversation go last (inserted unless there, then compared). Different data under the same key
in the target is refused (CopyRefused), as is a source whose schema is not this build's
latest. The end compares every table's row count on both sides (`verify`)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from tether.store import indexing
from tether.store.errors import StoreError
from tether.store.postgres.db import Conn, parse_url
from tether.store.postgres.store import TABLES, migrate
from tether.store.sqlite_files import known_schema_version, sqlite_path

COLUMNS: dict[str, tuple[str, ...]] = {
    "tenants": ("id", "created_at"),
    "api_keys": ("id", "tenant_id", "key_hash", "prefix", "created_at", "revoked_at"),
    "conversations": (
        "pk", "tenant_id", "id", "title", "model", "system_prompt", "last_seq", "turn_count",
        "epoch", "usage_prompt_tokens", "usage_through_seq", "usage_epoch", "forked_from_pk",
        "forked_from_seq", "created_at", "updated_at", "history_hash", "history_len", "metadata",
    ),
    "conversation_aliases": ("tenant_id", "alias", "conversation_pk", "created_at"),
    "turns": (
        "id", "conversation_pk", "status", "model", "stream", "prompt_tokens",
        "completion_tokens", "usage", "error", "first_seq", "last_seq", "compacted", "notes",
        "started_at", "first_token_at", "finished_at", "owner",
    ),
    "messages": (
        "conversation_pk", "seq", "role", "content", "tool_calls", "tool_call_id", "name",
        "extra", "tokens", "turn_id", "created_at",
    ),
    "checkpoints": (
        "conversation_pk", "epoch", "covers_through_seq", "prune_through_seq", "summary",
        "ledger", "tokens_before", "tokens_after", "model", "prompt_version", "stats",
        "turn_id", "created_at",
    ),
    "idempotency_keys": (
        "tenant_id", "route", "key", "request_hash", "status", "stream", "response", "headers",
        "created_at", "completed_at", "owner", "conversation_pk",
    ),
    "tool_steps": (
        "turn_id", "call_id", "tenant_id", "conversation_id", "round", "tool", "source",
        "arguments", "status", "output_chars", "started_at", "finished_at",
    ),
}  # fmt: skip
BOOLEANS = frozenset({"stream", "compacted"})  # SQLite's 0/1, PostgreSQL's BOOLEAN
KEYS = {
    "tenants": ("id",),
    "api_keys": ("id",),
    "idempotency_keys": ("tenant_id", "route", "key"),
    "tool_steps": ("turn_id", "call_id"),
}
# what a conversation owns, selected by its pk, in the order they are written
OWNED = (
    ("conversation_aliases", "conversation_pk = ?"),
    ("messages", "conversation_pk = ? ORDER BY seq"),
    ("checkpoints", "conversation_pk = ? ORDER BY epoch"),
    ("turns", "conversation_pk = ?"),
    ("tool_steps", "turn_id IN (SELECT id FROM turns WHERE conversation_pk = ?)"),
    ("idempotency_keys", "conversation_pk = ?"),
)
ORPHANS = (
    ("idempotency_keys", "conversation_pk IS NULL OR conversation_pk NOT IN "
     "(SELECT pk FROM conversations)"),
    ("tool_steps", "turn_id NOT IN (SELECT id FROM turns)"),
)  # fmt: skip
SEARCH_COLUMNS = ("rowid", "tenant_id", "body", "cjk")
BATCH = 200  # conversations read (and looked up in the target) at a time
STOP_AFTER = "TETHER_MIGRATE_STOP_AFTER"  # tests: die (as a crash would) after N conversations


class CopyRefused(Exception):
    """Why the copy cannot start or go on: one line for the operator."""


@dataclass
class Report:
    copied: int = 0  # conversations written by this run
    skipped: int = 0  # conversations already in the target (an earlier run)
    messages: int = 0  # messages written by this run
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # table: (source, target)

    def mismatched(self) -> list[str]:
        return [t for t, (a, b) in self.counts.items() if a != b]


def _indexed(role: str | None, content: str | None) -> int:
    """1 if postgres/search.py indexes a message of this role and stored content."""
    if role not in indexing.INDEXED_ROLES or content is None:
        return 0
    return int(indexing.content_text(orjson.loads(content)) is not None)


def open_source(url: str) -> sqlite3.Connection:
    """The SQLite database, read-only, in one snapshot; its schema this build's latest."""
    try:
        path = sqlite_path(url)
    except ValueError as exc:
        raise CopyRefused(f"--from: {exc}") from None
    if not path.is_file():
        raise CopyRefused(f"no SQLite database at {path}")
    try:
        src = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        src.create_function("tether_indexed", 2, _indexed, deterministic=True)
        src.execute("BEGIN")
        table = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        have = None
        if src.execute(table).fetchone() is not None:
            have = src.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    except sqlite3.Error as exc:
        raise CopyRefused(f"cannot read the SQLite database {path}: {exc}") from None
    known = known_schema_version()
    if have != known:
        src.close()
        if have is None:
            raise CopyRefused(f"{path} is not a migrated Tether database (no schema version)")
        hint = (
            "it was written by a newer Tether: copy it with that version"
            if have > known
            else f"upgrade it first: tether migrate --database-url sqlite:///{path}"
        )
        raise CopyRefused(
            f"{path} has schema version {have}, this build copies version {known} only: {hint}"
        )
    return src


async def open_target(url: str) -> Conn:
    """One connection to the PostgreSQL database, its migrations applied."""
    dsn, settings, _ = parse_url(url)
    # a conversation's commit does not wait for its WAL flush (a server crash can lose the
    # last ones: the next run copies them again); move_sequences' commit waits for all of it
    settings = {**settings, "synchronous_commit": "off"}
    try:
        c = await asyncpg.connect(dsn, server_settings=settings, timeout=10)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise CopyRefused(f"cannot connect to the PostgreSQL database: {exc}") from None
    try:
        async with c.transaction():
            await migrate(c)
    except (StoreError, asyncpg.PostgresError) as exc:
        await c.close()
        raise CopyRefused(f"cannot migrate the PostgreSQL database: {exc}") from None
    return c


def select(
    src: sqlite3.Connection, table: str, where: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """The table's rows (COLUMNS, booleans as booleans) matching `where`."""
    cols = COLUMNS[table]
    flags = [i for i, name in enumerate(cols) if name in BOOLEANS]
    rows = src.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE {where}", params).fetchall()
    if not flags:
        return [tuple(r) for r in rows]
    out = []
    for row in rows:
        values = list(row)
        for i in flags:
            values[i] = bool(values[i])
        out.append(tuple(values))
    return out


async def merge(c: Conn, table: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert the rows the target lacks (by any unique key), then refuse if any row is not in
    the target exactly as in the source."""
    if not rows:
        return
    cols, keys = COLUMNS[table], KEYS[table]
    listed = ", ".join(cols)
    temp = f"tether_incoming_{table}"
    async with c.transaction():
        await c.execute(f"CREATE TEMP TABLE {temp} (LIKE {table}) ON COMMIT DROP")
        await c.copy_records_to_table(temp, records=rows, columns=list(cols))
        await c.execute(
            f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {temp} ON CONFLICT DO NOTHING"
        )
        on = " AND ".join(f"t.{k} = i.{k}" for k in keys)
        mine = ", ".join(f"i.{col}" for col in cols)
        theirs = ", ".join(f"t.{col}" for col in cols)
        differ = await c.fetchrow(
            f"SELECT {', '.join('i.' + k for k in keys)} FROM {temp} i LEFT JOIN {table} t "
            f"ON {on} WHERE ({mine}) IS DISTINCT FROM ({theirs}) LIMIT 1"
        )
    if differ is not None:
        named = ", ".join(f"{k}={v!r}" for k, v in zip(keys, differ, strict=True))
        raise CopyRefused(
            f"the target already holds different data in {table} ({named}): "
            "copy into an empty database (or the one an earlier run of this copy wrote)"
        )


def search_rows(
    pk: int, tenant_id: str, owned: dict[str, list[tuple[Any, ...]]]
) -> list[tuple[Any, ...]]:
    """The conversation's search rows, as postgres/search.py writes them with its text."""
    texts: list[tuple[int, str]] = []
    for m in owned["messages"]:
        role, content = m[2], m[3]
        text = indexing.content_text(orjson.loads(content)) if content is not None else None
        if role in indexing.INDEXED_ROLES and text is not None:
            texts.append((indexing.rowid(pk, m[1]), text))
    for k in owned["checkpoints"]:
        if k[4]:
            texts.append((indexing.rowid(pk, indexing.SUMMARY_SLOT + k[1]), k[4]))
    rows = []
    for row, text in texts:
        body = text.replace("\x00", "")  # PostgreSQL text holds no NUL
        rows.append((row, tenant_id, body, indexing.has_cjk(body)))
    return rows


async def copy_conversation(c: Conn, src: sqlite3.Connection, conv: tuple[Any, ...]) -> int:
    """The conversation and all it owns, in one transaction; how many messages."""
    pk, tenant_id = conv[0], conv[1]
    owned = {table: select(src, table, where, (pk,)) for table, where in OWNED}
    try:
        async with c.transaction():
            await c.copy_records_to_table(
                "conversations", records=[conv], columns=list(COLUMNS["conversations"])
            )
            for table, _ in OWNED:
                if owned[table]:
                    await c.copy_records_to_table(
                        table, records=owned[table], columns=list(COLUMNS[table])
                    )
            found = search_rows(pk, tenant_id, owned)
            if found:
                await c.copy_records_to_table(
                    "search_rows", records=found, columns=list(SEARCH_COLUMNS)
                )
    except (asyncpg.UniqueViolationError, asyncpg.ForeignKeyViolationError) as exc:
        raise CopyRefused(
            f"conversation {conv[2]!r} (tenant {tenant_id!r}, pk {pk}) cannot be copied: the "
            f"target already holds different data ({exc.detail or exc})"
        ) from None
    return len(owned["messages"])


async def check_target_pks(c: Conn, src: sqlite3.Connection) -> None:
    """Refuse before writing if the target holds conversations the source has not."""
    theirs = {int(r[0]) for r in await c.fetch("SELECT pk FROM conversations")}
    if not theirs:
        return
    mine = {int(r[0]) for r in src.execute("SELECT pk FROM conversations")}
    extra = sorted(theirs - mine)
    if extra:
        raise CopyRefused(
            f"the target holds {len(extra)} conversation(s) the source has not (pk {extra[0]}, "
            "…): copy into an empty database (or the one an earlier run of this copy wrote)"
        )


async def copy_conversations(
    c: Conn, src: sqlite3.Connection, report: Report, advance: Callable[[int], None]
) -> None:
    """Every conversation in pk order, each written whole or skipped when already there."""
    stop = int(os.environ.get(STOP_AFTER) or 0)
    cols = ", ".join(COLUMNS["conversations"])
    after = -1
    while batch := select(src, "conversations", "pk > ? ORDER BY pk LIMIT ?", (after, BATCH)):
        there = {
            int(r[0]): tuple(r)
            for r in await c.fetch(
                f"SELECT {cols} FROM conversations WHERE pk = ANY($1::bigint[])",
                [row[0] for row in batch],
            )
        }
        for conv in batch:
            if conv[0] in there:
                if there[conv[0]] != conv:
                    raise CopyRefused(
                        f"conversation pk {conv[0]} ({conv[2]!r}) differs between the source "
                        "and the target: the source changed since an earlier run, or the "
                        "target holds other data"
                    )
                report.skipped += 1
            else:
                report.messages += await copy_conversation(c, src, conv)
                report.copied += 1
                if stop and report.copied >= stop:
                    os._exit(75)  # a crash mid-copy (tests): nothing cleaned up
            advance(1)
        after = batch[-1][0]


async def move_sequences(c: Conn, src: sqlite3.Connection) -> None:
    """The identity sequences past every copied pk and SQLite's floor (never backwards), in a
    transaction whose commit waits for the WAL to be flushed (the copy's too)."""
    row = src.execute("SELECT max(floor) FROM conversation_pk_floor").fetchone()
    floors = {"conversations": int(row[0] or 0), "api_keys": 0}
    async with c.transaction():
        await c.execute("SET LOCAL synchronous_commit = on")
        await c.execute("SELECT txid_current()")  # an xid: the commit waits for the flush
        for table, col in (("conversations", "pk"), ("api_keys", "id")):
            await _move(c, table, col, floors[table])


async def _move(c: Conn, table: str, col: str, floor: int) -> None:
    seq = await c.fetchval("SELECT pg_get_serial_sequence($1, $2)", table, col)
    top = int(await c.fetchval(f"SELECT coalesce(max({col}), 0) FROM {table}"))
    last, called = await c.fetchrow(f"SELECT last_value, is_called FROM {seq}")
    value = max(top, floor, int(last) if called else 0)
    if value > 0:
        await c.execute("SELECT setval($1, $2)", seq, value)


async def verify(c: Conn, src: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Each table's rows on both sides (search_rows: the texts the source holds to index)."""
    source = {t: int(src.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}
    source["search_rows"] = int(
        src.execute(
            "SELECT (SELECT coalesce(sum(tether_indexed(role, content)), 0) FROM messages) + "
            "(SELECT count(*) FROM checkpoints WHERE summary IS NOT NULL AND summary <> '')"
        ).fetchone()[0]
    )
    async with c.transaction(isolation="repeatable_read", readonly=True):
        target = {t: int(await c.fetchval(f"SELECT count(*) FROM {t}")) for t in source}
    return {t: (source[t], target[t]) for t in source}


async def copy_database(
    source_url: str,
    target_url: str,
    start: Callable[[int], None] = lambda total: None,
    advance: Callable[[int], None] = lambda n: None,
) -> Report:
    """Copy (or continue copying) the SQLite database into the PostgreSQL one; the counts."""
    src = open_source(source_url)
    try:
        c = await open_target(target_url)
        try:
            report = Report()
            await check_target_pks(c, src)
            for table in ("tenants", "api_keys"):
                await merge(c, table, select(src, table, "1 = 1"))
            start(int(src.execute("SELECT count(*) FROM conversations").fetchone()[0]))
            await copy_conversations(c, src, report, advance)
            for table, where in ORPHANS:
                await merge(c, table, select(src, table, where))
            await move_sequences(c, src)
            report.counts = await verify(c, src)
            return report
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
            raise CopyRefused(
                f"the PostgreSQL connection failed mid-copy ({exc}): run the same command "
                "again to continue"
            ) from None
        except sqlite3.Error as exc:
            raise CopyRefused(f"cannot read the SQLite database: {exc}") from None
        finally:
            await c.close()
    finally:
        src.close()
