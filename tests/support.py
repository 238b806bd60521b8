"""Real processes for tests: the scripted upstream and `tether serve`, on free loopback ports."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import httpx2
import openai
import orjson
import pytest

from tether.api.errors import error_of
from tether.testing.processes import free_port, stop, wait_ready


async def client_error(call: Callable[[], Awaitable[Any]]) -> Any:
    """Await `call`; a storage exception leaves as the error the API answers it with
    (`tether.api.errors.error_of`): what a client is told."""
    try:
        return await call()
    except Exception as exc:
        error = error_of(exc)
        if error is None or error is exc:
            raise
        raise error from exc


class ScriptedUpstream:
    """`python -m tether.testing.upstream` as a process; records what it was sent."""

    def __init__(self, context_window: int | None = None) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "tether.testing.upstream", "--port", str(self.port)]
        if context_window:
            cmd += ["--context-window", str(context_window)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening" in line, line
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx2.Client(base_url=self.url, timeout=10)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def reset(self) -> None:
        self.http.post("/_script/reset").raise_for_status()

    def queue(self, *items: dict[str, Any]) -> None:
        self.http.post("/_script/queue", json=list(items)).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.http.get("/_script/requests").json()
        return data

    def chat_bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests() if r["path"] == "/v1/chat/completions"]

    def close(self) -> None:
        self.http.close()
        stop(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()


_CLIENTS: dict[str, list[openai.OpenAI]] = {}  # the SDK clients made for a server, by its URL


def sdk_client(srv: TetherServer, key: str = "none") -> openai.OpenAI:
    """The `openai` SDK on `srv`, closed by `close_sdk_clients` (not left to the garbage
    collector: a pooled socket it finds later fails the run on a ResourceWarning)."""
    made = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0)
    _CLIENTS.setdefault(srv.url, []).append(made)
    return made


def close_sdk_clients(srv: TetherServer) -> None:
    for made in _CLIENTS.pop(srv.url, []):
        made.close()


def cannot(reason: str, what: str) -> NoReturn:
    """A test this machine cannot run: skipped on a developer's machine, a failure in CI (env CI
    set), where `what` must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run {what})")
    pytest.skip(reason)


def postgres_schema(db_path: Path) -> str:
    """A fresh schema on the test PostgreSQL for the server of `db_path` (TETHER_TEST_STORE=
    postgres: the end-to-end tests run on PostgreSQL instead of the SQLite file)."""
    base = os.environ.get("TETHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = "e2e_" + hashlib.sha1(str(db_path).encode()).hexdigest()[:16]
    sql = f"CREATE SCHEMA IF NOT EXISTS {schema}; " + "; ".join(
        f"CREATE EXTENSION IF NOT EXISTS {e} SCHEMA public" for e in ("pg_trgm", "unaccent")
    )
    subprocess.run(["psql", base, "-q", "-c", sql], check=True, capture_output=True)
    return f"{base}?search_path={schema},public"


class TetherServer:
    """`python -m tether serve` as a real process on a SQLite file."""

    def __init__(self, db_path: Path, upstream_url: str | None, **env: str) -> None:
        self.db_path = db_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "TETHER_HOST": "127.0.0.1",
            "TETHER_PORT": str(self.port),
            "TETHER_DATABASE_URL": f"sqlite:///{db_path}",
            "TETHER_DEFAULT_MODEL": "scripted",
            "TETHER_UPSTREAM_RETRIES": "0",
            "TETHER_LOCAL_MODEL": "off",  # tests/test_local_model.py turns it on
            **env,
        }
        if upstream_url:
            self.env["TETHER_UPSTREAM_BASE_URL"] = upstream_url
        if os.environ.get("TETHER_TEST_STORE") == "postgres" and "TETHER_DATABASE_URL" not in env:
            self.env["TETHER_DATABASE_URL"] = postgres_schema(db_path)  # an exploratory run
        self.log = db_path.with_suffix(f".{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.keys: dict[str, str] = {}  # tenant -> the last key create_key made for it

    def start(self, timeout: float = 20) -> TetherServer:
        self.logfile = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "serve"],
            env=self.env,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
        )
        wait_ready(f"{self.url}/health", self.proc, timeout, self.log)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
            self.logfile.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tether", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def create_key(self, tenant: str) -> str:
        out = self.cli("keys", "create", "--tenant", tenant)
        assert out.returncode == 0, out.stderr
        key = out.stdout.strip().splitlines()[-1]
        self.keys[tenant] = key
        return key

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)

    def counts(self) -> dict[str, int]:
        tables = (
            "conversations",
            "messages",
            "turns",
            "checkpoints",
            "conversation_aliases",
            "idempotency_keys",
        )
        with self.db() as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

    def transcript(self, conversation_id: str, tenant: str = "default") -> list[tuple[Any, ...]]:
        """(seq, role, content as stored: JSON text or None) of each message, oldest first; []
        if there is no such conversation. Read through GET …/messages (with the tenant's key
        from create_key, if any) while the server runs; from the file once it has stopped."""
        if not self.running:
            return self._file_transcript(conversation_id, tenant)
        key = self.keys.get(tenant)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = f"{self.url}/v1/conversations/{quote(conversation_id, safe='')}/messages"
        rows: list[tuple[Any, ...]] = []
        while True:
            resp = httpx2.get(url, params={"after": len(rows), "limit": 10_000}, headers=headers)
            if resp.status_code == 404 and resp.json()["error"]["code"] == "conversation_not_found":
                return []
            resp.raise_for_status()
            page = resp.json()
            if page["conversation_id"] != conversation_id:
                return []  # an alias: no conversation has this id itself (as in the file)
            for m in page["data"]:
                content = m.get("content")
                stored = None if content is None else orjson.dumps(content).decode()
                rows.append((m["seq"], m["role"], stored))
            if not page["has_more"] or not page["data"]:
                return rows

    def _file_transcript(self, conversation_id: str, tenant: str) -> list[tuple[Any, ...]]:
        with self.db() as conn:
            return conn.execute(
                "SELECT m.seq, m.role, m.content FROM messages m JOIN conversations c "
                "ON c.pk = m.conversation_pk WHERE c.tenant_id = ? AND c.id = ? ORDER BY m.seq",
                (tenant, conversation_id),
            ).fetchall()


TOOL_SERVERS = Path(__file__).parent / "tool_servers"


def with_ledger(db_path: Path, upstream_url: str, **env: str) -> TetherServer:
    """`tether serve` running tests/tool_servers/ledger.py as its stdio MCP server `ledger`,
    started and waited for until that server is up."""
    conf = db_path.with_suffix(".toml")
    ledger = [sys.executable, str(TOOL_SERVERS / "ledger.py")]
    conf.write_text(
        f'[[mcp_servers]]\nname = "ledger"\ncommand = {orjson.dumps(ledger).decode()}\n'
    )
    srv = TetherServer(db_path, upstream_url, TETHER_CONFIG=str(conf), **env).start()
    wait_logged(srv, "mcp.up", 1)
    return srv


def wait_logged(srv: TetherServer, event: str, times: int, timeout: float = 20) -> None:
    """Until the server's log holds `event` `times` times (an MCP server coming up, say)."""
    deadline = time.monotonic() + timeout
    while srv.output().count(event) < times:
        assert time.monotonic() < deadline, srv.output()[-3000:]
        time.sleep(0.1)


def docs_http() -> tuple[subprocess.Popen[bytes], str]:
    """tests/tool_servers/docs_http.py (a Streamable HTTP MCP server) in its own process, once
    it accepts connections; and its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(TOOL_SERVERS / "docs_http.py"), str(port)])
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                stop(proc)
                raise RuntimeError("docs_http did not start") from None
            time.sleep(0.1)
