"""The database file under attack (issue 12), against real `tether serve` processes: one server
per file however the file is named, a file deleted or replaced while serving, a schema from a
newer Tether, a `-shm` file made unusable, a start on a full disk.

Before: a symlink, a hard link or a deleted `.lock` let a second server in (through a hard link
60 of 120 acknowledged turns were lost); a deleted database took five more turns with 200; a
newer schema was "up to date" and every request answered 500; an immutable `-shm` killed the
server with SIGBUS, nothing in the log; a full disk at start-up printed a 151-line traceback.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx2
import orjson
import pytest

from tests.probe import health_probe
from tests.support import ScriptedUpstream, TetherServer
from tests.test_e2e_storage import cannot, fill, small_disk  # noqa: F401 - small_disk: a fixture


def known_schema_version() -> int:
    """The newest migration of the tether under test."""
    found = resources.files("tether.store.migrations.sqlite").iterdir()
    return max(int(f.name.split("_", 1)[0]) for f in found if f.name.endswith(".sql"))


CHAT = "/v1/chat/completions"


def chat(srv: TetherServer, conversation: str, text: str) -> httpx2.Response:
    body = orjson.dumps({"messages": [{"role": "user", "content": text}]})
    headers = {"Content-Type": "application/json", "X-Hermes-Session-Id": conversation}
    return httpx2.post(srv.url + CHAT, content=body, headers=headers, timeout=30)


def error_code(resp: httpx2.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["error"]["code"]


@pytest.fixture
def running(tmp_path: Path, upstream: ScriptedUpstream) -> Iterator[TetherServer]:
    srv = TetherServer(tmp_path / "real" / "tether.db", upstream.base_url)
    srv.db_path.parent.mkdir()
    srv.start()
    yield srv
    srv.stop()


def second_serve(srv: TetherServer, db: Path) -> subprocess.CompletedProcess[str]:
    """`tether serve` on another name for the database (it must refuse before binding)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tether",
            "serve",
            "--port",
            "1",
            "--database-url",
            f"sqlite:///{db}",
        ],
        env=srv.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_symlink_or_a_deleted_lock_file_does_not_let_a_second_server_in(
    running: TetherServer, tmp_path: Path
) -> None:
    link = tmp_path / "link.db"
    link.symlink_to(running.db_path)
    for stale in running.db_path.parent.glob("*.lock"):
        stale.unlink()  # the old lock lived in a file of its own
    out = second_serve(running, link)
    assert out.returncode == 2, out.stderr
    assert "already using" in out.stderr and str(running.db_path) in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr


def test_a_hard_linked_database_is_refused(running: TetherServer, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    os.link(running.db_path, other)
    out = second_serve(running, other)  # while the first runs: the file's own lock
    assert out.returncode == 2 and "already using" in out.stderr, out.stderr
    running.stop()
    out = second_serve(running, other)  # and alone: two names are two WAL files
    text = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stderr
    assert "2 names" in text and "hard link" in text, out.stderr


def test_a_database_deleted_or_replaced_while_serving_answers_503(
    running: TetherServer, tmp_path: Path
) -> None:
    assert chat(running, "gone-1", "before").status_code == 200
    with health_probe(running.url, accept=(200, 503)) as probe:
        running.db_path.unlink()
        for i in range(3):
            resp = chat(running, "gone-1", f"after {i}")
            assert error_code(resp) == (503, "storage_unavailable"), resp.text
            assert "deleted" in resp.json()["error"]["message"]
    probe.check()  # /health answers in time, and says so: load balancers stop sending
    health = httpx2.get(running.url + "/health", timeout=5)
    assert health.status_code == 503 and health.json()["status"] == "storage_unavailable"
    assert "deleted" in health.json()["problem"]
    assert "store.file_changed" in running.output()


def test_a_replaced_database_answers_503(running: TetherServer, tmp_path: Path) -> None:
    assert chat(running, "swap-1", "before").status_code == 200
    impostor = tmp_path / "impostor.db"
    sqlite3.connect(impostor).close()
    impostor.replace(running.db_path)
    resp = chat(running, "swap-1", "after")
    assert error_code(resp) == (503, "storage_unavailable"), resp.text
    assert "replaced" in resp.json()["error"]["message"]


def test_a_newer_schema_is_refused_naming_both_versions(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    srv = TetherServer(tmp_path / "tether.db", upstream.base_url)
    assert srv.cli("migrate").returncode == 0
    future = known_schema_version() + 7
    with sqlite3.connect(srv.db_path) as conn:
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, 0)", (future, f"{future:04d}_future.sql")
        )
    for command in (["migrate"], ["serve", "--port", "1"], ["keys", "create"]):
        out = srv.cli(*command)
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        text = " ".join(out.stderr.split())
        assert f"schema version {future}" in text and f"(version {known_schema_version()})" in text
        assert "Traceback" not in out.stderr and "up to date" not in out.stderr


def _chattr(flag: str, path: Path) -> None:
    out = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        cannot(f"chattr {flag} is not supported here: {out.stderr.strip()}")


@pytest.mark.parametrize("how", ["immutable", "truncated"])
def test_an_unusable_shm_file_does_not_kill_the_server(running: TetherServer, how: str) -> None:
    assert chat(running, "shm-1", "before").status_code == 200
    shm = Path(f"{running.db_path}-shm")
    assert shm.exists()
    with health_probe(running.url, accept=(200, 503)) as probe:
        if how == "immutable":
            _chattr("+i", shm)
        else:
            os.truncate(shm, 0)
        try:
            for i in range(3):
                resp = chat(running, "shm-1", f"after {i}")
                assert error_code(resp) == (503, "storage_unavailable"), resp.text
                assert "-shm" in resp.json()["error"]["message"]
        finally:
            if how == "immutable":
                _chattr("-i", shm)
    probe.check()
    assert 503 in probe.statuses or httpx2.get(running.url + "/health").status_code == 503
    assert running.proc is not None and running.proc.poll() is None, "the server died"
    assert "store.file_changed" in running.output()


def test_an_immutable_shm_file_is_refused_at_start_up(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    srv = TetherServer(tmp_path / "tether.db", upstream.base_url)
    assert srv.cli("migrate").returncode == 0
    shm = Path(f"{srv.db_path}-shm")
    shm.write_bytes(b"\0" * 32768)  # what a crashed server leaves behind
    _chattr("+i", shm)
    try:
        out = srv.cli("serve", "--port", "1")
    finally:
        _chattr("-i", shm)
    assert out.returncode == 2, out.stderr
    assert "immutable" in " ".join(out.stderr.split()) and "Traceback" not in out.stderr


def test_starting_on_a_full_disk_is_one_line_not_a_traceback(
    small_disk: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    upstream: ScriptedUpstream,
) -> None:
    srv = TetherServer(small_disk / "tether.db", upstream.base_url)
    fill(small_disk)
    out = srv.cli("serve", "--port", "1")
    text = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in text and len(text) < 600, out.stderr  # it was 151 lines
    assert "disk is full" in text or "No space left" in text, out.stderr
