"""The stores the contract suite (tests/test_store_contract.py, tests/test_store_manage.py)
runs on, as fixtures (loaded for every test by tests/conftest.py's pytest_plugins): `store` is
an opened, migrated store of each kind in turn, `other_server` a second server's store on the
same database. A new backend joins by appending one `pytest.param(factory, id=...)` to
STORE_FACTORIES: an async context manager that, given the test's tmp_path and an owner, yields an
unopened store on that test's database (empty at first, shared by the stores of one test)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests import support
from tether.store import open_store
from tether.store.base import Store
from tether.store.memory import MemoryStore
from tether.store.memory_db import MemoryDatabase

StoreFactory = Callable[[Path, str], AbstractAsyncContextManager[Store]]


@contextlib.asynccontextmanager
async def sqlite_factory(tmp_path: Path, owner: str) -> AsyncIterator[Store]:
    yield open_store(f"sqlite:///{tmp_path}/t.db", owner=owner)


_MEMORY: dict[Path, MemoryDatabase] = {}  # a test's "database file", shared by its stores


@contextlib.asynccontextmanager
async def memory_factory(tmp_path: Path, owner: str) -> AsyncIterator[Store]:
    yield MemoryStore(owner=owner, database=_MEMORY.setdefault(tmp_path, MemoryDatabase()))


# PostgreSQL: the server at TETHER_TEST_POSTGRES_URL (a local one by default). Each test gets
# its own schema (`?search_path=` of the store's URL, read by store/postgres/db.py), dropped after
# it; pg_trgm and unaccent are created once, in `public`, where every test schema finds them.
POSTGRES_URL = os.environ.get(
    "TETHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
_SCHEMAS: dict[Path, str] = {}  # a test's schema, shared by its stores


def cannot(reason: str) -> NoReturn:
    """No PostgreSQL: a skip on a developer's machine, a failure in CI (never a skip there)."""
    support.cannot(reason, "the store contract on PostgreSQL")


async def _admin() -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        cannot(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")


@contextlib.asynccontextmanager
async def postgres_factory(tmp_path: Path, owner: str) -> AsyncIterator[Store]:
    schema = _SCHEMAS.get(tmp_path)
    if schema is not None:  # the test's second server: the same schema
        yield open_store(f"{POSTGRES_URL}?search_path={schema},public", owner=owner)
        return
    schema = _SCHEMAS[tmp_path] = f"t_{uuid.uuid4().hex}"
    admin = await _admin()
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        with contextlib.suppress(Exception):  # another process created it first
            for extension in ("pg_trgm", "unaccent"):
                await admin.execute(f"CREATE EXTENSION IF NOT EXISTS {extension} SCHEMA public")
        yield open_store(f"{POSTGRES_URL}?search_path={schema},public", owner=owner)
    finally:
        _SCHEMAS.pop(tmp_path, None)
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


STORE_FACTORIES = [
    pytest.param(sqlite_factory, id="sqlite"),
    pytest.param(memory_factory, id="memory"),
    pytest.param(postgres_factory, id="postgres"),
]


@pytest.fixture(params=STORE_FACTORIES)
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield request.param
    _MEMORY.pop(tmp_path, None)


@pytest.fixture
async def unmigrated_store(factory: StoreFactory, tmp_path: Path) -> AsyncIterator[Store]:
    async with factory(tmp_path, "owner-a") as store:
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture
async def store(unmigrated_store: Store) -> Store:
    await unmigrated_store.migrate()
    return unmigrated_store


@pytest.fixture
async def other_server(factory: StoreFactory, tmp_path: Path, store: Store) -> AsyncIterator[Store]:
    """A second server's store (owner "owner-b") on the same database as `store`."""
    async with factory(tmp_path, "owner-b") as other:
        await other.open()
        try:
            yield other
        finally:
            await other.close()
