"""The stores the contract suite (tests/test_store_contract.py, tests/test_store_manage.py)
runs on, as fixtures (loaded for every test by tests/conftest.py's pytest_plugins): `store` is
an opened, migrated store of each kind in turn, `other_server` a second server's store on the
same database. A new backend joins by appending one `pytest.param(factory, id=...)` to
STORE_FACTORIES: an async context manager that, given the test's tmp_path and an owner, yields an
unopened store on that test's database (empty at first, shared by the stores of one test)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

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


STORE_FACTORIES = [
    pytest.param(sqlite_factory, id="sqlite"),
    pytest.param(memory_factory, id="memory"),
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
