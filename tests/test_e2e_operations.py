"""The operator's view against a real server: `/metrics` scraped around a run shows the counters
moving; `/ready` is 200, and 503 `not_ready` when the upstream does not answer or the database
file is gone; `X-Request-Id` is accepted (a plain token) or made, and returned; with
TETHER_LOG_FORMAT=json every log line is a JSON object and the request's id is on the events of
the turn it started."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx2
import pytest

from tests.support import ScriptedUpstream, TetherServer
from tether.testing.processes import free_port

pytestmark = pytest.mark.e2e


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus' text format (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def chat(srv: TetherServer, text: str, **headers: str) -> httpx2.Response:
    body = {"model": "scripted", "messages": [{"role": "user", "content": text}]}
    return httpx2.post(f"{srv.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_metrics_move_ready_answers_and_request_ids(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    srv = TetherServer(tmp_path / "ops.db", upstream.base_url, TETHER_LOG_FORMAT="json").start()
    try:
        before = httpx2.get(f"{srv.url}/metrics", timeout=10)
        assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
        for i in range(3):
            r = chat(srv, f"count me {i}", **{"X-Tether-Conversation": "ops-1"})
            assert r.status_code == 200
        after = httpx2.get(f"{srv.url}/metrics", timeout=10).text
        chat_route = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
        assert sample(after, "tether_http_requests_total", **chat_route) == 3 + sample(
            before.text, "tether_http_requests_total", **chat_route
        )
        assert sample(after, "tether_turns_total", status="completed") >= 3
        assert (
            sample(after, "tether_upstream_seconds_count", kind="stream")
            + sample(after, "tether_upstream_seconds_count", kind="complete")
            >= 3
        )
        assert sample(after, "tether_store_seconds_count", op="write") >= 3
        assert sample(after, "tether_view_cache_lookups_total", result="hit") >= 1
        assert sample(after, "tether_queue_wait_seconds_count") >= 3
        assert "ops-1" not in after  # no ids in labels
        # readiness
        ready = httpx2.get(f"{srv.url}/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "upstream": "ok"}}
        # request ids: a plain token kept, anything else replaced, none made up
        given = chat(srv, "with an id", **{"X-Request-Id": "req-json-1"})
        assert given.headers["x-request-id"] == "req-json-1"
        bad = httpx2.get(f"{srv.url}/health", headers={"X-Request-Id": "no spaces!"}, timeout=10)
        made = httpx2.get(f"{srv.url}/health", timeout=10)
        for r in (bad, made):
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), r.headers
        assert bad.headers["x-request-id"] != made.headers["x-request-id"]
        time.sleep(0.5)  # the log thread writes
        lines = [json.loads(x) for x in srv.log.read_text().splitlines() if x.startswith("{")]
        events = [e for e in lines if e.get("request_id") == "req-json-1"]
        assert any(e["event"] == "turn.committed" for e in events), events
        # the database gone: not ready
        for suffix in ("", "-wal", "-shm"):
            Path(f"{srv.db_path}{suffix}").unlink(missing_ok=True)
        time.sleep(1.1)  # past the once-a-second check
        gone = httpx2.get(f"{srv.url}/ready", timeout=10)
        assert gone.status_code == 503 and gone.headers["retry-after"] == "5"
        assert gone.json()["error"]["code"] == "not_ready"
        assert gone.json()["checks"]["database"].startswith("unavailable")
    finally:
        srv.stop()


def test_ready_is_503_when_the_upstream_does_not_answer(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    srv = TetherServer(tmp_path / "dead.db", dead).start()
    try:
        r = httpx2.get(f"{srv.url}/ready", timeout=10)
        assert r.status_code == 503, r.text
        assert r.json()["checks"]["database"] == "ok"
        assert r.json()["checks"]["upstream"].startswith("unavailable")
        assert httpx2.get(f"{srv.url}/health", timeout=10).status_code == 200  # still alive
    finally:
        srv.stop()
