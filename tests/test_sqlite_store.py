"""SQLite-only behaviour of the SQLite store: the file (WAL mode, locks, checkpoints), reopening,
migrations and schema versions, owners written before the owner column, and how SQLite's
failures become storage exceptions (and those the API's errors). What every store must do is in
tests/test_store_contract.py."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from tests.test_store_contract import chat, create, new_turn
from tether.api.errors import error_of
from tether.store import open_store
from tether.store.base import IdempotencyKey, SearchQuery, TurnCommit
from tether.store.errors import StorageUnavailable
from tether.store.sqlite import SqliteStore
from tether.store.sqlite_backlog import INDEX_EVERY
from tether.store.sqlite_files import known_schema_version

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/t.db"


async def test_sqlite_file_is_in_wal_mode(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    await store.open()
    try:
        await store.migrate()
        await create(store, "tenant-a", "conv-1", chat(2))
        with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as conn:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
    finally:
        await store.close()


async def test_sqlite_reopen_keeps_data_and_applies_no_migration(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    await store.open()
    try:
        assert await store.migrate()
        conv = await create(store, "tenant-a", "conv-1", chat(3), system_prompt="S")
        await store.add_api_key("tenant-a", "hash-1", "sk-aaaa")
        messages = await store.load_messages(conv.pk)
    finally:
        await store.close()

    again = open_store(sqlite_url)
    await again.open()
    try:
        assert await again.migrate() == []
        assert await again.resolve("tenant-a", "conv-1") == conv
        assert await again.load_messages(conv.pk) == messages
        assert await again.tenant_for_key("hash-1") == "tenant-a"
    finally:
        await again.close()


async def test_sqlite_write_while_another_process_holds_the_lock_waits_on_the_writer_thread(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Writes run on the event loop's thread with a connection that never waits; when the
    database is locked they wait on the writer thread instead, and the loop stays free."""
    store = open_store(sqlite_url)
    await store.open()
    try:
        await store.migrate()
        await create(store, "tenant-a", "conv-1", chat(2))
        other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing
        write = asyncio.ensure_future(create(store, "tenant-a", "conv-2", chat(2)))
        started = time.monotonic()
        for _ in range(20):  # the loop keeps running while the write waits for the lock
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 2.0  # not stalled for the 5 s busy timeout
        assert not write.done()
        other.execute("ROLLBACK")
        other.close()
        conv = await asyncio.wait_for(write, 5)
        assert conv.last_seq == 2
        assert len(await store.load_messages(conv.pk)) == 2
    finally:
        await store.close()


async def test_sqlite_wal_is_checkpointed_off_the_loop(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's connection never copies the WAL into the database file (that costs an
    fsync); the writer thread does, after every CHECKPOINT_EVERY writes."""
    import tether.store.sqlite_db as sqlite_store

    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 10)
    db = tmp_path / "t.db"
    store = open_store(sqlite_url)
    await store.open()
    try:
        await store.migrate()  # write 1: every table, in the WAL only
        for i in range(8):
            await store.ensure_tenant(f"tenant-{i}")
        await asyncio.sleep(0.2)
        before = db.stat().st_size
        await store.ensure_tenant("tenant-9")  # write 10: a checkpoint on the writer thread
        for _ in range(50):
            await asyncio.sleep(0.02)
            if db.stat().st_size > before:
                break
        assert before <= 4096 < db.stat().st_size
    finally:
        await store.close()


async def test_sqlite_rows_from_before_the_owner_column_are_every_servers_own(
    sqlite_url: str, tmp_path: Path
) -> None:
    """One server per SQLite file until migration 0004: a running turn or claim it left (owner
    NULL) is swept by whichever server starts next."""
    store = SqliteStore(sqlite_url, owner="old-host")
    await store.open()
    try:
        await store.migrate()
        conv = await create(store, "tenant-a", "conv-1", chat(2))
        left = new_turn(status="running")
        await store.record_turn(conv.pk, left)
        key = IdempotencyKey("tenant-a", "chat", "k-1", "hash")
        assert await store.claim_idempotency(key, 3600) is None
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "t.db", isolation_level=None)) as conn:
        assert conn.execute("SELECT owner FROM turns WHERE id = ?", (left.id,)).fetchone() == (
            "old-host",
        )
        assert conn.execute("SELECT owner FROM idempotency_keys").fetchall() == [("old-host",)]
        conn.execute("UPDATE turns SET owner = NULL")
        conn.execute("UPDATE idempotency_keys SET owner = NULL")

    again = open_store(sqlite_url, owner="new-host")
    await again.open()
    try:
        assert await again.abandon_running_turns({"code": "server_restarted"}) == 1
        assert await again.reap_idempotency(3600, running_too=True) == 1
        row = await again.get_turn("tenant-a", "conv-1", left.id)
        assert row is not None and row.status == "incomplete"
    finally:
        await again.close()


async def test_sqlite_the_newest_migration_adds_the_owner_columns(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = open_store(sqlite_url)
    await store.open()
    try:
        applied = await store.migrate()
        assert applied[-1] == known_schema_version() >= 4
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as conn:
        for table in ("turns", "idempotency_keys"):
            columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            assert "owner" in columns, table


async def test_sqlite_an_unopenable_database_raises_storage_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    store = SqliteStore(f"sqlite:///{tmp_path}/a-directory.db")
    await store.open()
    try:
        with pytest.raises(StorageUnavailable) as caught:
            await store.ensure_tenant("t")
        assert caught.value.retry_after == 5
        assert "CANTOPEN" in str(caught.value)
        error = error_of(caught.value)
        assert error is not None
        assert (error.status, error.code, error.headers) == (
            503,
            "storage_unavailable",
            {"Retry-After": "5"},
        )
        assert error.message == str(caught.value)
    finally:
        await store.close()


async def test_sqlite_a_deleted_database_file_is_a_storage_problem(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = open_store(sqlite_url)
    await store.open()
    try:
        await store.migrate()
        await create(store, "tenant-a", "conv-1", chat(2))
        assert store.storage_problem() is None
        (tmp_path / "t.db").unlink()
        problem = store.storage_problem()
        assert problem is not None and "deleted" in problem
        with pytest.raises(StorageUnavailable) as caught:
            await store.ensure_tenant("tenant-b")
        assert caught.value.retry_after == 30
        assert str(caught.value) == problem
        error = error_of(caught.value)
        assert error is not None and (error.status, error.headers) == (503, {"Retry-After": "30"})
    finally:
        await store.close()


async def test_the_search_index_follows_the_turns_in_batches(sqlite_url: str) -> None:
    """A turn's commit records its messages in the backlog; the indexer writes their FTS5 rows
    shortly after, many turns in one transaction; a search first drains what is left."""
    store = open_store(sqlite_url)
    await store.open()
    await store.migrate()
    try:
        conv = await create(store, "t", "c", chat(2, "kiwifruit"))
        assert isinstance(store, SqliteStore)
        db = store.path

        def counts() -> tuple[int, int]:
            with contextlib.closing(sqlite3.connect(db)) as c:
                backlog = c.execute("SELECT count(*) FROM search_backlog").fetchone()[0]
                rows = c.execute("SELECT count(*) FROM search_words").fetchone()[0]
                return int(backlog), int(rows)

        assert counts() == (1, 0)  # recorded, not indexed yet
        await asyncio.sleep(INDEX_EVERY * 3)
        assert counts() == (0, 2)  # the indexer wrote both messages' rows
        more = chat(2, "mangosteen")
        await store.commit_turn(
            TurnCommit(tenant_id="t", turn=new_turn(), messages=more, conversation_pk=conv.pk,
                       expected_last_seq=2)
        )  # fmt: skip
        hits = await store.search("t", SearchQuery(match="mangosteen0", cjk=False))
        assert [h.seq for h in hits] == [3]  # a search never misses a committed message
        assert counts() == (0, 4)
    finally:
        await store.close()
