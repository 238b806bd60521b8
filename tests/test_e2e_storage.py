"""Storage failures (reliability matrix C4): a full disk answers 507 `insufficient_storage` and a
read-only or unopenable database 503 `storage_unavailable` (with Retry-After) — the OpenAI
envelope, never a 500 or a traceback — nothing of the failed turn is stored, and turns work again
once the cause is gone.

The disk is real: a 2 MB tmpfs mounted for the test (root only; skipped, saying why, elsewhere),
filled with a file, then freed. The read-only database is a read-only bind mount."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import httpx2
import orjson
import pytest

from tests import support
from tests.support import ScriptedUpstream, TetherServer, client_error
from tether.errors import TetherError
from tether.store.sqlite import SqliteStore

CHAT = "/v1/chat/completions"
ENVELOPE_KEYS = {"message", "type", "param", "code"}


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def cannot(reason: str) -> NoReturn:
    """Cannot mount: a skip on a developer's machine, a failure in CI (root, like these
    machines), where the storage tests must run."""
    support.cannot(reason, "the storage tests")


def mount(target: Path, *args: str) -> None:
    if sys.platform != "linux" or os.geteuid() != 0:
        cannot("mounting a filesystem for the test needs root on Linux")
    out = run("mount", *args, str(target))
    if out.returncode != 0:
        cannot(f"cannot mount here ({' '.join(args)}): {out.stderr.strip()}")


def unmount(target: Path) -> None:
    if run("umount", str(target)).returncode != 0:
        run("umount", "-l", str(target))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    # room for a 40,000-word turn twice over: its messages, their search rows, the WAL
    mount(disk, "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs")
    yield disk
    unmount(disk)


def fill(disk: Path) -> Path:
    """Write a file until the disk says ENOSPC."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(os.urandom(65536))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    assert os.statvfs(disk).f_bavail == 0
    return filler


def chat(srv: TetherServer, conversation: str, text: str) -> httpx2.Response:
    body = orjson.dumps({"messages": [{"role": "user", "content": text}]})
    return httpx2.post(
        srv.url + CHAT,
        content=body,
        headers={"Content-Type": "application/json", "X-Hermes-Session-Id": conversation},
        timeout=60,
    )


def transcript(srv: TetherServer, conversation: str) -> list[tuple[int, str, object]]:
    """(seq, role, content) as stored (content is kept as JSON)."""
    return [(seq, role, orjson.loads(c)) for seq, role, c in srv.transcript(conversation)]


def completed_turns(srv: TetherServer) -> int:
    with srv.db() as conn:
        return int(
            conn.execute("SELECT count(*) FROM turns WHERE status = 'completed'").fetchone()[0]
        )


def check_error(resp: httpx2.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0] == "application/json"
    assert "Traceback" not in resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS, body
    assert body["error"]["code"] == code, body
    error: dict[str, object] = body["error"]
    return error


def test_full_disk_is_507_stores_nothing_and_recovers(
    small_disk: Path, tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    srv = TetherServer(small_disk / "tether.db", upstream.base_url)
    srv.log = tmp_path / "server.log"  # the log must not share the disk we fill
    srv.start()
    try:
        cid = "disk-full-1"
        assert chat(srv, cid, "before the disk filled").status_code == 200
        before = transcript(srv, cid)
        assert len(before) == 2
        counts, completed = srv.counts(), completed_turns(srv)

        # a turn bigger than what is left of the WAL file: its commit needs new blocks
        big = " ".join(f"word{i}" for i in range(40_000))
        filler = fill(small_disk)
        for conversation in (cid, "disk-full-new"):
            resp = chat(srv, conversation, big)
            error = check_error(resp, 507, "insufficient_storage")
            assert "disk is full" in str(error["message"])
        # reads still work, and nothing of the failed turns is there
        messages = httpx2.get(f"{srv.url}/v1/conversations/{cid}/messages", timeout=10)
        assert messages.status_code == 200, messages.text
        assert [m["content"] for m in messages.json()["data"]] == [m[2] for m in before]
        assert transcript(srv, cid) == before
        assert transcript(srv, "disk-full-new") == []
        after = srv.counts()
        assert {k: v for k, v in after.items() if k != "turns"} == {
            k: v for k, v in counts.items() if k != "turns"
        }
        assert completed_turns(srv) == completed  # failed turns may be recorded, as failed
        assert srv.proc is not None and srv.proc.poll() is None  # still serving

        filler.unlink()
        freed = time.monotonic()
        while True:
            resp = chat(srv, cid, big)
            if resp.status_code == 200 or time.monotonic() - freed > 5:
                break
            time.sleep(0.2)
        assert resp.status_code == 200, resp.text
        assert time.monotonic() - freed < 5
        assert transcript(srv, cid) == [
            *before,
            (3, "user", big),
            (4, "assistant", f"echo: {big}"),
        ]
        assert chat(srv, "disk-full-new", "small").status_code == 200
        assert "Traceback" not in httpx2.get(f"{srv.url}/health", timeout=10).text
    finally:
        srv.stop()
    log = srv.output()
    assert "store.disk_full" in log  # the operator is told why


@pytest.fixture
async def read_only_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A migrated database with one key, seen through a read-only bind mount (while the
    read-write store that made it stays open, as a server would)."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    writer = SqliteStore(f"sqlite:///{rw}/t.db")
    await writer.open()
    await writer.migrate()
    await writer.add_api_key("t", "hash-1", "tk_abcd")
    try:
        mount(ro, "--bind", str(rw))
        try:
            if run("mount", "-o", "remount,bind,ro", str(ro)).returncode != 0:
                cannot("cannot make a read-only bind mount here")
            store = SqliteStore(f"sqlite:///{ro}/t.db")
            await store.open()
            yield store
            await store.close()
        finally:
            unmount(ro)
    finally:
        await writer.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_read_only_database_is_503_and_reads_still_work(
    read_only_store: SqliteStore,
) -> None:
    store = read_only_store
    assert await store.tenant_for_key("hash-1") == "t"
    for attempt in (
        lambda: store.ensure_tenant("u"),
        lambda: store.add_api_key("u", "hash-2", "tk_efgh"),
    ):
        with pytest.raises(TetherError) as caught:
            await client_error(attempt)
        error = caught.value
        assert (error.status, error.code) == (503, "storage_unavailable")
        assert error.headers == {"Retry-After": "5"}
        assert "READONLY" in error.message
        assert set(error.body()["error"]) == ENVELOPE_KEYS
    # no transaction was left open: the next read works
    assert await store.tenant_for_key("hash-1") == "t"
    assert await store.tenant_for_key("hash-2") is None
    assert await store.count_api_keys() == 1


@pytest.mark.asyncio(loop_scope="session")
async def test_unopenable_database_is_503(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()  # a path SQLite cannot open as a database
    store = SqliteStore(f"sqlite:///{tmp_path}/a-directory.db")
    await store.open()
    try:
        for attempt in (lambda: store.resolve("t", "c"), lambda: store.ensure_tenant("t")):
            with pytest.raises(TetherError) as caught:
                await client_error(attempt)
            assert (caught.value.status, caught.value.code) == (503, "storage_unavailable")
            assert caught.value.headers["Retry-After"] == "5"
    finally:
        await store.close()
