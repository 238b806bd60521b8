"""A request is authenticated, and counted against its key's rate limit, once: the turn routes
asked for the caller's tenant two or three times per request, so with TETHER_RATE_LIMIT_RPS=1 a
resume (`GET …/events`), a turn read or a cancel answered 429 every time."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2

from tests.support import ScriptedUpstream, TetherServer


def test_one_request_takes_one_token_of_the_rate_limit(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    srv = TetherServer(tmp_path / "rate.db", upstream.base_url, TETHER_RATE_LIMIT_RPS="1")
    key = srv.create_key("acme")
    srv.start()
    try:
        auth = {"Authorization": f"Bearer {key}", "X-Hermes-Session-Id": "rate-1"}
        body = {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        r = httpx2.post(f"{srv.url}/v1/chat/completions", json=body, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        turn = r.headers["x-tether-turn"]
        base = f"{srv.url}/v1/conversations/rate-1/turns/{turn}"
        for method, url in (
            ("GET", f"{base}/events"),
            ("GET", base),
            ("POST", f"{base}/cancel"),
            ("GET", f"{srv.url}/v1/conversations/rate-1"),
        ):
            time.sleep(1.1)  # the bucket holds one token again
            resp = httpx2.request(method, url, headers=auth, timeout=30)
            assert resp.status_code == 200, (method, url, resp.status_code, resp.text)
        # and the limit still holds: two requests at once, the second is refused
        time.sleep(1.1)
        first = httpx2.get(base, headers=auth, timeout=30)
        second = httpx2.get(base, headers=auth, timeout=30)
        assert first.status_code == 200
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        srv.stop()
