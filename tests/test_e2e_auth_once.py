"""A request is authenticated, and counted against its key's rate limit, once: the turn routes
asked for the caller's tenant two or three times per request, so with TETHER_RATE_LIMIT_RPS=1
a resume (`GET …/events`), a turn read or a cancel answered 429 every time. Authentication now
runs once, before routing (api/gate.py); one request of every authenticated route of the app
passes with one token in the bucket, and the open routes take none."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2

from tests.support import ScriptedUpstream, TetherServer
from tests.test_inprocess_gate import BODIES, QUERIES, STATUSES
from tether.api.gate import OPEN_PATHS
from tether.api.routes import routes

CHAT = "/v1/chat/completions"


def authenticated_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route of the app that needs a key."""
    return {
        (method, route.path)
        for route in routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD" and route.path not in OPEN_PATHS
    }


def test_one_request_takes_one_token_of_the_rate_limit(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    srv = TetherServer(tmp_path / "rate.db", upstream.base_url, TETHER_RATE_LIMIT_RPS="1")
    key = srv.create_key("acme")
    srv.start()
    try:
        auth = {"Authorization": f"Bearer {key}", "X-Hermes-Session-Id": "rate-1"}
        body = {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        r = httpx2.post(f"{srv.url}{CHAT}", json=body, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        turn = r.headers["x-tether-turn"]
        conv = "/v1/conversations/{conversation_id}"
        turn_path = conv + "/turns/{turn_id}"
        ids = {"conversation_id": "rate-1", "turn_id": turn, "model_id": "scripted"}
        ids["call_id"] = "call-none"
        ids["session_id"] = "rate-1"
        ids["response_id"] = "resp_" + turn.removeprefix("turn_")
        ids["item_id"] = "msg_1"
        requests = [
            ("GET", turn_path + "/events"),
            ("GET", turn_path),
            ("POST", turn_path + "/cancel"),
            ("GET", conv),
            ("GET", conv + "/messages"),
            ("GET", conv + "/context"),
            ("POST", conv + "/compact"),
            ("GET", conv + "/approvals"),
            ("POST", turn_path + "/approvals/{call_id}"),  # none waits: 404, after its token
            ("GET", "/v1/models"),
            ("GET", "/v1/models/{model_id:path}"),
            ("GET", "/v1/conversations"),
            ("PATCH", conv),
            ("POST", conv + "/fork"),
            ("POST", conv + "/messages"),
            ("GET", conv + "/export"),
            ("GET", "/v1/search"),
            ("GET", "/api/sessions"),
            ("GET", "/api/sessions/{session_id}"),
            ("GET", "/api/sessions/{session_id}/messages"),
            ("POST", "/v1/responses"),
            ("GET", "/v1/responses/{response_id}"),
            ("GET", "/v1/responses/{response_id}/input_items"),
            ("POST", "/v1/responses/{response_id}/cancel"),
            ("POST", "/v1/conversations"),
            ("POST", "/v1/responses/compact"),
            ("POST", conv),
            ("GET", conv + "/items"),
            ("POST", conv + "/items"),
            ("GET", conv + "/items/{item_id}"),
            ("DELETE", conv + "/items/{item_id}"),
            ("DELETE", "/v1/responses/{response_id}"),
            ("DELETE", conv),  # last
        ]
        # every authenticated route: the chat request above, and one of each other one here
        assert {("POST", CHAT), *requests} == authenticated_routes()
        for method, template in requests:
            time.sleep(1.1)  # the bucket holds one token again
            url = srv.url + template.replace(":path}", "}").format(**ids)
            if template.endswith("{call_id}"):
                resp = httpx2.post(url, headers=auth, json={"decision": "deny"}, timeout=30)
                assert resp.status_code == 404, (url, resp.text)
                assert resp.json()["error"]["code"] == "approval_not_found"
                continue
            resp = httpx2.request(
                method,
                url,
                headers=auth,
                json=BODIES.get((method, template)),
                params=QUERIES.get(template),
                timeout=30,
            )
            want = STATUSES.get((method, template), 200)
            assert resp.status_code == want, (method, url, resp.status_code, resp.text)
        # the open routes take no token: the next request still has the bucket's one
        time.sleep(1.1)
        for path in sorted(OPEN_PATHS):
            assert httpx2.get(srv.url + path, timeout=30).status_code == 200, path
        base = f"{srv.url}/v1/models"
        first = httpx2.get(base, headers=auth, timeout=30)
        second = httpx2.get(base, headers=auth, timeout=30)
        assert first.status_code == 200
        # and the limit still holds: two requests at once, the second is refused
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "rate_limit_exceeded"
        assert second.headers["retry-after"] == "1"
        assert second.headers["content-type"] == "application/json"
    finally:
        srv.stop()


def test_the_gate_answers_before_routing(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    """With keys, every path but the open ones needs one, an unknown path too (401, not 404:
    nothing about the routes is told to a caller without a key); with a key, the router
    answers as before."""
    srv = TetherServer(tmp_path / "gate.db", upstream.base_url)
    key = srv.create_key("acme")
    srv.start()
    try:
        for method, path in (("GET", "/v1/nope"), ("POST", "/v1/nope"), ("GET", CHAT)):
            resp = httpx2.request(method, srv.url + path, timeout=30)
            assert resp.status_code == 401, (method, path, resp.text)
            assert resp.json()["error"]["code"] == "missing_api_key"
            assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
        bad = httpx2.get(srv.url + "/v1/models", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        auth = {"Authorization": f"Bearer {key}"}
        nope = httpx2.get(srv.url + "/v1/nope", headers=auth, timeout=30)
        assert nope.status_code == 404 and nope.json()["error"]["code"] == "not_found"
        wrong = httpx2.get(srv.url + CHAT, headers=auth, timeout=30)
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    finally:
        srv.stop()
