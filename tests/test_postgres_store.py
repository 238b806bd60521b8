"""The PostgreSQL store alone (the contract suites run it with the others): its URL options,
migrations applied once by servers starting together, and the server's failures as store
errors. Each test has its own schema (tests/store_fixtures.py's postgres_factory), and, like the
contract suite there, fails in CI when PostgreSQL is not reachable (skips elsewhere)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import pytest

from tests.store_fixtures import postgres_factory
from tests.test_store_contract import append, chat, create
from tether.store import open_store
from tether.store.base import Store
from tether.store.errors import ConflictError, SchemaTooNew, StorageUnavailable
from tether.store.postgres import PostgresStore
from tether.store.postgres.db import parse_url

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Store]:
    async with postgres_factory(tmp_path, "owner-a") as store:
        await store.open()
        try:
            await store.migrate()
            yield store
        finally:
            await store.close()


async def test_both_url_schemes_open_it_and_its_own_options_stay_out_of_the_dsn() -> None:
    for scheme in ("postgres", "postgresql"):
        assert isinstance(open_store(f"{scheme}://u@h/db"), PostgresStore)
    dsn, settings, size = parse_url("postgresql://u@h:5/db?search_path=t_1,public&pool_size=3&x=1")
    assert (dsn, settings, size) == ("postgresql://u@h:5/db?x=1", {"search_path": "t_1,public"}, 3)
    assert parse_url("postgresql://u@h/db")[1:] == ({}, 10)


async def test_the_migrations_ship_with_the_package() -> None:
    names = [f.name for f in resources.files("tether.store.migrations.postgres").iterdir()]
    assert "0001_init.sql" in names


async def test_servers_starting_together_apply_each_migration_once(tmp_path: Path) -> None:
    async with postgres_factory(tmp_path, "a") as a, postgres_factory(tmp_path, "b") as b:
        for store in (a, b):
            await store.open()
        try:
            applied = await asyncio.gather(a.migrate(), b.migrate())
            assert sorted(applied) == [[], [1]]
            assert await a.migrate() == [] and (await b.counts())["conversations"] == 0
        finally:
            for store in (a, b):
                await store.close()


async def test_a_schema_newer_than_this_build_is_refused(pg: Store) -> None:
    assert isinstance(pg, PostgresStore)
    await pg.db.write(lambda c: c.execute("INSERT INTO schema_migrations VALUES (9999, 'x', 0)"))
    with pytest.raises(SchemaTooNew):
        await pg.migrate()


async def test_two_servers_committing_on_one_conversation_exactly_one_wins(
    pg: Store, tmp_path: Path
) -> None:
    async with postgres_factory(tmp_path, "owner-b") as other:
        await other.open()
        try:
            conv = await create(pg, "t", "c", chat(2))
            results = await asyncio.gather(
                *(append(s, conv, chat(2, f"s{i}")) for i, s in enumerate([pg, other] * 4)),
                return_exceptions=True,
            )
            won = [r for r in results if not isinstance(r, BaseException)]
            assert len(won) == 1 and won[0].last_seq == 4
            assert all(isinstance(r, ConflictError) for r in results if r not in won)
            assert [m.seq for m in await other.load_messages(conv.pk)] == [1, 2, 3, 4]
        finally:
            await other.close()


async def test_an_unreachable_server_is_storage_unavailable() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(StorageUnavailable):
        await store.open()


async def test_a_connection_the_server_ends_is_unavailable_then_replaced(pg: Store) -> None:
    """An administrator's pg_terminate_backend (or a restart) mid-query: StorageUnavailable,
    and the pool connects again for the next call."""
    one = open_store(pg.url + "&pool_size=1")
    assert isinstance(one, PostgresStore) and isinstance(pg, PostgresStore)
    await one.open()
    try:
        await create(one, "t", "c", chat(2))
        marker = f"/* {uuid.uuid4().hex} */"
        slow = asyncio.ensure_future(
            one.db.read(lambda c: c.fetchval(f"SELECT pg_sleep(30) {marker}"))
        )
        for _ in range(100):
            await asyncio.sleep(0.02)
            ended = await pg.db.read(
                lambda c: c.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query LIKE '%' || $1 AND pid <> pg_backend_pid()",
                    marker,
                )
            )
            if ended:
                break
        with pytest.raises(StorageUnavailable):
            await slow
        assert one.storage_problem() is not None
        resolved = await one.resolve("t", "c")  # the pool connected again
        assert resolved is not None and one.storage_problem() is None
    finally:
        await one.close()


TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a quick brown cat sat on the mat",
    "Weather in Oslo: drizzle and fjordwind today",
    "error: connection refused by server at 10.0.0.1",
    "running runner runs ran",
    "Café au lait and naïve résumé",
    "foo_bar baz-qux snake_case kebab-case",
    "明天在东京举行的会议几点开始？",
    "会議は午前十時に始まります。",
    "東京 tokyo mixed text",
    "price is 3.14 dollars, or $4",
    "email me at someone@example.com please",
    "far apart words near each other here",
]
QUERIES = [
    "quick", "brown quick", '"quick brown"', "quick OR lazy", "quick NOT cat", "qui*", '"qui"*',
    "(quick OR fjordwind) AND brown", "error: refused", "cafe", "naïve", "foo_bar", "snake",
    "baz-qux", "东京举行", "東京", "会議", "午前十時", "3.14", "example", "someone@example.com",
    "NEAR(far words)", "NEAR(far words, 2)", "quick + brown", "^quick", "QUICK", "over lazy",
    '"unbalanced', "quick AND", "(quick", "OR", "*", "tenant : quick",
]  # fmt: skip


async def test_search_finds_what_the_sqlite_store_finds(pg: Store, tmp_path: Path) -> None:
    """The same texts and queries (engine/search.py's, FTS5 syntax too) on both stores: the same
    hits, and a QueryError for the same malformed ones."""
    from tests.store_fixtures import sqlite_factory
    from tether.engine.search import build
    from tether.model import Message
    from tether.store.errors import QueryError

    async with sqlite_factory(tmp_path, "owner-a") as lite:
        await lite.open()
        await lite.migrate()
        try:
            for store in (pg, lite):
                for i, text in enumerate(TEXTS):
                    await create(store, "t", f"c{i}", [Message(role="user", content=text)])
            for q in QUERIES:
                query = build(q, group=False, limit=50, filters=None)
                found = []
                for store in (pg, lite):
                    try:
                        found.append(
                            sorted(h.conversation_id for h in await store.search("t", query))
                        )
                    except QueryError:
                        found.append(["QueryError"])
                assert found[0] == found[1], q
        finally:
            await lite.close()


async def test_concurrent_claims_of_one_key_from_two_servers_exactly_one_wins(
    pg: Store, tmp_path: Path
) -> None:
    from tether.store.base import IdempotencyKey

    key = IdempotencyKey(tenant_id="t", route="chat", key="k", request_hash="h")
    async with postgres_factory(tmp_path, "owner-b") as other:
        await other.open()
        try:
            got = await asyncio.gather(*(s.claim_idempotency(key, 3600) for s in [pg, other] * 4))
            assert sum(g is None for g in got) == 1
            assert all(g.status == "running" for g in got if g is not None)
        finally:
            await other.close()
