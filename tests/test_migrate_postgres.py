"""`tether migrate --from sqlite:///… --database postgresql://…` (store/postgres/copy.py), run as
a subprocess on a real SQLite database written by the SQLite store, into a PostgreSQL schema of
its own per test: the counts agree, the PostgreSQL store answers as the SQLite one did, a second
run changes nothing, a crashed run continues, a conflicting target or a source of another schema
version is refused (exit 1, one line), new conversations get fresh pks. Skipped without
PostgreSQL (a failure when CI is set), as tests/store_fixtures.py does."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.store_fixtures import POSTGRES_URL, cannot
from tests.test_store_contract import append, chat, checkpoint, create, fork, idem, new_turn
from tether.model import Message, ToolStep
from tether.store import open_store
from tether.store.base import NewConversation, SearchQuery, Store, StoredResponse, TurnCommit
from tether.store.postgres.copy import COLUMNS, STOP_AFTER
from tether.store.sqlite_files import claim_single_server

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEYS = {"hash-a1": "tenant-a", "hash-a2": "tenant-a", "hash-b1": "tenant-b"}
QUERIES = ['"hello"', '"fork"', '"summary"', '"東京で会"', '"step"', '"zzz"']


@dataclass
class Target:
    url: str
    schema: str


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    import asyncpg

    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        cannot(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
    schema = f"t_{uuid.uuid4().hex}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    for extension in ("pg_trgm", "unaccent"):
        with contextlib.suppress(asyncpg.PostgresError):  # another process created it first
            await admin.execute(f"CREATE EXTENSION IF NOT EXISTS {extension} SCHEMA public")
    try:
        yield Target(f"{POSTGRES_URL}?search_path={schema},public", schema)
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


async def opened(url: str) -> Store:
    store = open_store(url)
    await store.open()
    await store.migrate()
    return store


async def fill(store: Store, extra: int = 6) -> None:
    """Two tenants with keys; conversations with messages (list parts, CJK, a tool output), a
    checkpoint, aliases, a fork, turns, tool steps, idempotency records; a deleted newest one."""
    for key_hash, tenant in KEYS.items():
        await store.add_api_key(tenant, key_hash, key_hash[:7])
    await store.revoke_api_key("hash-a2", "hash-a2")
    parts = [{"type": "text", "text": "hello from a part"}, {"type": "image_url", "image_url": {}}]
    first = [
        Message(role="system", content="hello system, never indexed"),
        Message(role="user", content=parts, tokens=3),
        Message(role="assistant", content="hello there 東京で会いましょう", tokens=5),
        Message(role="tool", content="step output", tool_call_id="call-1", name="search"),
    ]
    key = idem("k-1", tenant="tenant-a")
    assert await store.claim_idempotency(key, 3600) is None
    turn = new_turn()
    c1 = await store.commit_turn(
        TurnCommit(
            tenant_id="tenant-a",
            turn=turn,
            messages=first,
            new_conversation=NewConversation(id="c1", title="first", model="model-a"),
            system_prompt="be brief",
            response=StoredResponse(key=key, stream=True, response=b"\x00\xffbody", headers={}),
            history_hash=b"\x01\x02",
            history_len=4,
        )
    )
    step = ToolStep(turn_id=turn.id, call_id="call-1", round=1, tool="search", source="builtin",
                    arguments="{}", status="ok", output_chars=11, started_at=1.5, finished_at=2.5,
                    tenant_id="tenant-a", conversation_id="c1")  # fmt: skip
    await store.record_tool_step(step)
    await store.record_tool_step(replace(step, turn_id="turn-never-recorded"))
    c1 = await append(store, c1, chat(4, "hello again "))
    await store.commit_checkpoint(c1.pk, checkpoint(1, 3))
    await store.add_alias("tenant-a", "c1-alias", c1.pk)
    await store.update_conversation(c1.pk, metadata={"team": "x"})
    await fork(store, c1, "c1-fork", 5, chat(2, "fork says "))
    assert await store.claim_idempotency(idem("k-running", tenant="tenant-b"), 3600) is None
    await create(store, "tenant-b", "c1", chat(3, "hello b "))
    for i in range(extra):
        await create(store, "tenant-b", f"b{i}", chat(2 + i, f"zzz{i} "))
    doomed = await create(store, "tenant-a", "doomed", chat(2, "gone "))
    await store.delete_conversation(doomed.pk)


@pytest.fixture
async def source(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/source.db"
    store = await opened(url)
    try:
        await fill(store)
    finally:
        await store.close()
    return url


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tether", "migrate", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def copy(source: str, target: str, env: dict[str, str] | None = None) -> Any:
    return run("--from", source, "--database", target, env=env)


async def answers(store: Store) -> list[Any]:
    """What the store answers, for both tenants: listings, whole and checkpointed loads,
    searches, keys, aliases, turns, tool steps, checkpoints, counts."""
    out: list[Any] = [await store.counts()]
    out += [await store.tenant_for_key(h) for h in [*KEYS, "hash-none"]]
    for tenant in ("tenant-a", "tenant-b"):
        convs = await store.list_conversations(tenant, limit=100)
        out.append(convs)
        for conv in convs:
            out.append(await store.load_conversation(tenant, conv.id, full=True))
            out.append(await store.load_conversation(tenant, conv.id, full=False))
            out.append(await store.list_aliases(conv.pk))
            turns = await store.list_turns(conv.pk)
            out += [turns, await store.list_checkpoints(conv.pk)]
            out += [await store.list_tool_steps(t.id) for t in turns]
        for match in QUERIES:
            cjk = "東" in match
            out.append(await store.search(tenant, SearchQuery(match=match, cjk=cjk, group=False)))
    out.append(await store.claim_idempotency(idem("k-1", tenant="tenant-a"), 1e9))
    out.append(await store.list_tool_steps("turn-never-recorded"))
    return out


async def same_answers(source: str, target: str) -> None:
    a, b = await opened(source), await opened(target)
    try:
        mine, theirs = await answers(a), await answers(b)
        assert mine[0] == theirs[0]  # counts first: the clearest failure
        assert mine == theirs
    finally:
        await a.close()
        await b.close()


def fingerprint(url: str) -> str:
    return hashlib.sha256(Path(url[len("sqlite:///") :]).read_bytes()).hexdigest()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [
        line
        for line in done.stderr.splitlines()
        if line.strip() and not line.startswith("copying ")  # the progress bar, if it began
    ]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    return lines[0]


async def test_copy_answers_as_sqlite_did_and_a_second_run_changes_nothing(
    source: str, target: Target
) -> None:
    before = fingerprint(source)
    held = claim_single_server(source)  # as a running `tether serve` holds it
    try:
        done = copy(source, target.url)
    finally:
        held.close()
    assert done.returncode == 0, done.stderr
    assert "DIFFERENT" not in done.stdout and "search_rows" in done.stdout
    assert "copied 9 conversation(s)" in done.stdout
    assert fingerprint(source) == before  # read only
    await same_answers(source, target.url)

    again = copy(source, target.url)
    assert again.returncode == 0, again.stderr
    assert "copied 0 conversation(s) (0 messages); 9 already there" in again.stdout
    await same_answers(source, target.url)

    # a new conversation on PostgreSQL gets a pk past every copied one and the deleted one's
    pg = await opened(target.url)
    try:
        new = await create(pg, "tenant-a", "after", chat(2))
        assert new.pk == 11  # 9 kept, then "doomed" (pk 10, deleted): SQLite's floor is 10
        await pg.add_api_key("tenant-a", "hash-new", "hash-ne")
    finally:
        await pg.close()


async def test_a_crashed_copy_continues_where_it_stopped(source: str, target: Target) -> None:
    crashed = copy(source, target.url, env={STOP_AFTER: "4"})
    assert crashed.returncode == 75, crashed.stderr
    pg = await opened(target.url)
    try:
        assert (await pg.counts())["conversations"] == 4
    finally:
        await pg.close()
    done = copy(source, target.url)
    assert done.returncode == 0, done.stderr
    assert "copied 5 conversation(s)" in done.stdout and "4 already there" in done.stdout
    await same_answers(source, target.url)


async def test_a_target_holding_other_data_is_refused(source: str, target: Target) -> None:
    pg = await opened(target.url)
    try:
        await create(pg, "tenant-a", "someone-else", chat(2))  # pk 1, another conversation
    finally:
        await pg.close()
    line = one_line_error(copy(source, target.url))
    assert "different" in line or "differs" in line


async def test_a_copied_conversation_changed_since_is_refused(source: str, target: Target) -> None:
    assert copy(source, target.url).returncode == 0
    pg = await opened(target.url)
    try:
        conv = await pg.resolve("tenant-b", "b0")
        assert conv is not None
        await pg.update_conversation(conv.pk, title="renamed")
    finally:
        await pg.close()
    assert "differs between the source and the target" in one_line_error(copy(source, target.url))


def older_copy(source: str, path: Path) -> Path:
    """A copy of the source that says it is at schema version 7."""
    path.write_bytes(Path(source[len("sqlite:///") :]).read_bytes())
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM schema_migrations WHERE version = 8")
    return path


async def test_refusals_are_one_line(source: str, target: Target, tmp_path: Path) -> None:
    unreachable = "postgresql://postgres@127.0.0.1:1/test"
    assert "cannot connect" in one_line_error(copy(source, unreachable))
    assert "no SQLite database" in one_line_error(copy(f"sqlite:///{tmp_path}/none.db", target.url))
    old = older_copy(source, tmp_path / "old.db")
    assert "schema version 7" in one_line_error(copy(f"sqlite:///{old}", target.url))
    assert "not a sqlite URL" in one_line_error(copy("postgresql://x@y/z", target.url))
    assert "must be a postgresql:// URL" in one_line_error(copy(source, f"sqlite:///{old}"))


async def test_migrate_applies_the_postgres_schema(target: Target) -> None:
    done = run("--database", target.url)
    assert done.returncode == 0, done.stderr
    assert "is up to date" in done.stderr
    pg = await opened(target.url)
    try:
        assert set((await pg.counts()).values()) == {0}
    finally:
        await pg.close()


async def test_the_copied_columns_are_every_column_of_both_schemas(
    source: str, target: Target
) -> None:
    import asyncpg

    assert run("--database", target.url).returncode == 0
    with sqlite3.connect(source[len("sqlite:///") :]) as db:
        lite = {t: {r[1] for r in db.execute(f"PRAGMA table_info({t})")} for t in COLUMNS}
    pg = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await pg.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND is_generated = 'NEVER'",
            target.schema,
        )
    finally:
        await pg.close()
    for table, cols in COLUMNS.items():
        assert set(cols) == lite[table] == {r[1] for r in rows if r[0] == table}, table
