"""The authentication gate (api/gate.py) in-process: the real app over ASGI with an in-memory
store and FakeUpstream. One authentication and one rate-limit token per request, before
routing, for every authenticated route; the open routes take none; errors raised in the gate
answer the OpenAI envelope with the status and headers a route's would have."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tether.api.app import create_app
from tether.api.auth import KEY_PREFIX, hash_key
from tether.api.gate import OPEN_PATHS
from tether.api.routes import routes
from tether.config import Settings
from tether.store import open_store
from tether.testing.fake import FakeUpstream

KEY = KEY_PREFIX + "gate-test-key"
CHAT = "/v1/chat/completions"


@pytest.fixture
def client() -> Iterator[TestClient]:
    """A keyed server whose limit refills slowly (one token in 1,000 s) from a large burst: each
    request's cost shows in the key's bucket."""
    settings = Settings(database_url="memory://", rate_limit_rps=0.001, rate_limit_burst=1000)
    store = open_store("memory://")
    app = create_app(settings, store=store, upstream=FakeUpstream())
    with TestClient(app, base_url="http://localhost") as tc:
        tc.portal.call(store.add_api_key, "acme", hash_key(KEY), KEY[:8])  # type: ignore[union-attr]
        yield tc


def tokens_left(tc: TestClient) -> float:
    limiter = tc.app.state.tether.auth.limiter  # type: ignore[attr-defined]
    return float(limiter._buckets[hash_key(KEY)][0])


# what a route needs to answer 2xx: a body, a query string, its success status
BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("PATCH", "/v1/conversations/{conversation_id}"): {"title": "renamed"},
    ("POST", "/v1/conversations/{conversation_id}/fork"): {"at_seq": 1},
    ("POST", "/v1/conversations/{conversation_id}/messages"): {
        "messages": [{"role": "user", "content": "appended"}]
    },
    ("POST", "/v1/conversations/{conversation_id}/turns/{turn_id}/approvals/{call_id}"): {
        "decision": "deny"
    },
    ("POST", "/v1/responses"): {"model": "scripted", "input": "x"},
    ("POST", "/v1/conversations"): {"metadata": {"k": "v"}},
    ("POST", "/v1/responses/compact"): {"model": "scripted", "input": "x"},
    ("POST", "/v1/conversations/{conversation_id}"): {"metadata": {"k": "v"}},
    ("POST", "/v1/conversations/{conversation_id}/items"): {
        "items": [{"role": "user", "content": "an item"}]
    },
}
QUERIES = {"/v1/search": {"q": "x"}}
STATUSES = {
    ("POST", "/v1/conversations/{conversation_id}/fork"): 201,
    # no call waits: that route answers 404, after its token
    ("POST", "/v1/conversations/{conversation_id}/turns/{turn_id}/approvals/{call_id}"): 404,
}


def test_every_authenticated_route_takes_one_token(client: TestClient) -> None:
    tc = client
    auth = {"Authorization": f"Bearer {KEY}", "X-Tether-Conversation": "gate-1"}
    body = {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    r = tc.post(CHAT, json=body, headers=auth)
    assert r.status_code == 200, r.text
    ids = {"conversation_id": "gate-1", "turn_id": r.headers["x-tether-turn"]}
    ids["model_id"] = "scripted"
    ids["session_id"] = "gate-1"
    ids["response_id"] = "resp_" + ids["turn_id"].removeprefix("turn_")
    ids["call_id"] = "call-none"
    ids["item_id"] = "msg_1"
    seen = set()
    every = [
        (method, route.path)
        for route in routes
        for method in sorted(getattr(route, "methods", None) or ())
        if method != "HEAD" and route.path not in OPEN_PATHS and route.path != CHAT
    ]
    conv = "/v1/conversations/{conversation_id}"
    last = {  # the deletes last, the conversation's at the very end
        ("DELETE", conv + "/items/{item_id}"): 1,
        ("DELETE", "/v1/responses/{response_id}"): 1,
        ("DELETE", conv): 2,
    }
    for method, path in sorted(every, key=lambda mp: last.get(mp, 0)):
        before = tokens_left(tc)
        url = path.replace(":path}", "}").format(**ids)
        resp = tc.request(
            method, url, headers=auth, json=BODIES.get((method, path)), params=QUERIES.get(path)
        )
        assert resp.status_code == STATUSES.get((method, path), 200), (method, url, resp.text)
        assert before - tokens_left(tc) == pytest.approx(1.0, abs=0.01), (method, url)
        seen.add((method, path))
    assert len(seen) == 33


def test_open_routes_need_no_key_and_others_do(client: TestClient) -> None:
    tc = client
    assert tc.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    before = tokens_left(tc)
    for path in OPEN_PATHS:
        assert tc.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200, path
    assert tokens_left(tc) == pytest.approx(before, abs=0.01)  # the open routes took none
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/nope"), ("POST", CHAT)):
        resp = tc.request(method, path)
        assert resp.status_code == 401, (method, path)
        assert resp.headers["content-type"] == "application/json"
        error = resp.json()["error"]
        assert error["code"] == "missing_api_key" and set(error) == {
            "message",
            "type",
            "param",
            "code",
        }
    bad = tc.get("/v1/models", headers={"Authorization": "Basic abc"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"


def test_the_rate_limit_is_answered_by_the_gate() -> None:
    settings = Settings(database_url="memory://", rate_limit_rps=0.001, rate_limit_burst=1)
    app = create_app(settings, store=open_store("memory://"), upstream=FakeUpstream())
    with TestClient(app, base_url="http://localhost") as tc:
        assert tc.get("/v1/models").status_code == 200  # open mode: the default tenant's bucket
        refused = tc.get("/v1/models")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) > 1
        assert tc.get("/health").status_code == 200  # open: no token needed
