"""Bad input gets the OpenAI error envelope with the right status, and leaves the database as it
was: no conversation and no message is written for a request that failed (a failed turn on an
existing conversation is recorded as one `turns` row)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from tests.support import ScriptedUpstream, TetherServer, free_port

CHAT = "/v1/chat/completions"
HI = {"role": "user", "content": "hi"}
OK_BODY = {"messages": [HI]}
JSON_CT = {"Content-Type": "application/json"}
ENVELOPE_KEYS = {"message", "type", "param", "code"}


def check_envelope(err: Any, code: str) -> dict[str, Any]:
    assert isinstance(err, dict) and set(err) == ENVELOPE_KEYS, err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    assert isinstance(err["type"], str) and err["type"], err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] == code, err
    return err


def check_error(resp: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    """The status, a JSON content type, exactly the OpenAI envelope, no traceback."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0].strip() == "application/json"
    assert "Traceback" not in resp.text
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    return check_envelope(body["error"], code)


@contextmanager
def unchanged(srv: TetherServer, failed_turns: int = 0) -> Iterator[None]:
    """Nothing but (maybe) failed turn rows is written while the block runs."""
    before = srv.counts()
    yield
    assert srv.counts() == {**before, "turns": before["turns"] + failed_turns}


def post(url: str, body: Any = OK_BODY, headers: dict[str, Any] | None = None) -> httpx2.Response:
    """POST a chat request: `body` is JSON-encoded unless it is bytes already."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx2.post(url + CHAT, content=content, headers={**JSON_CT, **(headers or {})})


def new_conversation(srv: TetherServer) -> str:
    """A conversation with one successful turn (through the scripted upstream's echo)."""
    resp = post(srv.url, {"messages": [{"role": "user", "content": "first"}]})
    assert resp.status_code == 200, resp.text
    return resp.headers["x-tether-conversation"]


def msgs(*messages: Any) -> dict[str, Any]:
    return {"messages": list(messages)}


CONTEXT_ERROR = {
    "message": "maximum context length is 10 tokens",
    "type": "invalid_request_error",
    "code": "context_length_exceeded",
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
BAD_IDS = [("space", "has space"), ("129", "a" * 129), ("nonascii", "é")]

# (id, body or raw bytes, extra headers, code, param)
BAD_REQUESTS: list[tuple[str, Any, dict[str, Any], str, str | None]] = [
    ("not_json", b"{not json", {}, "invalid_json", None),
    ("empty_body", b"", {}, "invalid_json", None),
    ("array_body", b'[{"role": "user", "content": "hi"}]', {}, "invalid_request", None),
    ("messages_not_list", {"messages": "hi"}, {}, "invalid_request", "messages"),
    ("messages_missing", {"model": "scripted"}, {}, "invalid_request", "messages"),
    ("messages_empty", msgs(), {}, "invalid_request", "messages"),
    ("message_is_string", msgs("hi"), {}, "invalid_request", "messages[0]"),
    ("unknown_role", msgs({"role": "wizard", "content": "hi"}), {}, "invalid_request",
     "messages[0].role"),
    ("tool_without_call_id", msgs(HI, {"role": "tool", "content": "x"}), {}, "invalid_request",
     "messages[1]"),
    ("user_content_null", msgs({"role": "user", "content": None}), {}, "invalid_request",
     "messages[0]"),
    ("stream_maybe", {**OK_BODY, "stream": "maybe"}, {}, "invalid_request", "stream"),
    ("n_2", {**OK_BODY, "n": 2}, {}, "n_not_supported", "n"),
    ("only_system", msgs({"role": "system", "content": "be nice"}), {}, "no_messages",
     "messages"),
    ("bad_history_mode", OK_BODY, {"X-Tether-History": "sometimes"}, "invalid_header",
     "x-tether-history"),
    *[
        (f"header_id_{name}", OK_BODY, {"X-Hermes-Session-Id": value.encode()},
         "invalid_conversation_id", "x-hermes-session-id")
        for name, value in BAD_IDS
    ],
    *[
        (f"body_id_{name}", {**OK_BODY, "conversation": value}, {}, "invalid_conversation_id",
         "conversation")
        for name, value in BAD_IDS
    ],
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "code", "param"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS],
)
def test_400_bad_request(
    server: TetherServer,
    upstream: ScriptedUpstream,
    body: Any,
    headers: dict[str, Any],
    code: str,
    param: str | None,
) -> None:
    with unchanged(server):
        err = check_error(post(server.url, body, headers), 400, code)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert upstream.chat_bodies() == []


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [("text/plain", b"hello"), ("text/plain", orjson.dumps(OK_BODY)), (None, b"{}")],
    ids=["text_plain", "json_as_text_plain", "missing"],
)
def test_415_unsupported_media_type(
    server: TetherServer, upstream: ScriptedUpstream, content_type: str | None, raw: bytes
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with unchanged(server):
        resp = httpx2.post(server.url + CHAT, content=raw, headers=headers)
        check_error(resp, 415, "unsupported_media_type")
    assert upstream.chat_bodies() == []


@pytest.mark.parametrize(
    ("method", "path", "headers", "code"),
    [
        ("POST", CHAT, {"X-Tether-Conversation": "conv_" + "0" * 32}, "conversation_not_found"),
        ("POST", CHAT, {"X-Hermes-Session-Id": "conv_" + secrets.token_hex(16)},
         "conversation_not_found"),
        ("POST", "/v1/nope", {}, "not_found"),
        ("GET", "/v1/nope", {}, "not_found"),
        ("GET", "/v1/conversations/does-not-exist", {}, "conversation_not_found"),
        ("GET", "/v1/conversations/does-not-exist/messages", {}, "conversation_not_found"),
    ],
    ids=["minted_id", "minted_hermes_id", "post_route", "get_route", "conv", "conv_messages"],
)  # fmt: skip
def test_404_not_found(
    server: TetherServer,
    upstream: ScriptedUpstream,
    method: str,
    path: str,
    headers: dict[str, str],
    code: str,
) -> None:
    with unchanged(server):
        resp = httpx2.request(
            method, server.url + path, content=orjson.dumps(OK_BODY),
            headers={**JSON_CT, **headers},
        )  # fmt: skip
        err = check_error(resp, 404, code)
    assert err["type"] == "not_found_error"
    assert upstream.chat_bodies() == []


def test_405_wrong_method(server: TetherServer) -> None:
    with unchanged(server):
        check_error(httpx2.get(server.url + CHAT), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("path", "code", "param"),
    [
        pytest.param("/v1/conversations/has%20space", "invalid_conversation_id",
                     "conversation_id", id="id_space"),
        pytest.param(f"/v1/conversations/{'a' * 129}/messages", "invalid_conversation_id",
                     "conversation_id", id="id_129"),
        pytest.param("/v1/conversations/{cid}/messages?after=-1", "invalid_request", "after",
                     id="after_negative"),
        pytest.param("/v1/conversations/{cid}/messages?after=1.5", "invalid_request", "after",
                     id="after_float"),
        # Both were 500 internal_error while the check was `after.isdigit()`.
        pytest.param("/v1/conversations/{cid}/messages?after=99999999999999999999",
                     "invalid_request", "after", id="after_too_big_for_sqlite"),
        pytest.param("/v1/conversations/{cid}/messages?after=%C2%B2", "invalid_request",
                     "after", id="after_superscript_2"),
    ],
)  # fmt: skip
def test_400_conversation_routes(server: TetherServer, path: str, code: str, param: str) -> None:
    cid = new_conversation(server)
    with unchanged(server):
        err = check_error(httpx2.get(server.url + path.format(cid=cid)), 400, code)
    assert err["param"] == param


def body_of(size: int, chunked: bool) -> Any:
    """A JSON body of about `size` bytes; in pieces (chunked, no Content-Length) or whole."""
    body = orjson.dumps(msgs({"role": "user", "content": "x" * size}))
    return (body[i : i + 65536] for i in range(0, len(body), 65536)) if chunked else body


@pytest.fixture(scope="module")
def small_server(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    """A second Tether (its own database: SQLite serves one process), 1000-byte body limit."""
    db = tmp_path_factory.mktemp("small") / "tether.db"
    srv = TetherServer(db, scripted.base_url, TETHER_MAX_BODY_BYTES="1000").start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
@pytest.mark.parametrize("limit", [1000, 8 * 1024 * 1024], ids=["1000", "default_8MiB"])
def test_413_body_too_large(
    request: pytest.FixtureRequest,
    server: TetherServer,
    upstream: ScriptedUpstream,
    limit: int,
    chunked: bool,
) -> None:
    srv = server if limit > 1000 else request.getfixturevalue("small_server")
    with unchanged(srv):
        resp = httpx2.post(srv.url + CHAT, content=body_of(limit, chunked), headers=JSON_CT)
        err = check_error(resp, 413, "request_too_large")
    assert str(limit) in err["message"]
    assert ("content-length" in resp.request.headers) is not chunked
    assert upstream.chat_bodies() == []
    # A body just under the limit, chunked or not, is accepted by the same server.
    resp = httpx2.post(
        srv.url + CHAT, content=body_of(limit - 100, chunked), headers=JSON_CT, timeout=60
    )  # 8 MB is counted by Tether and the scripted upstream: seconds, not milliseconds
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    "messages",
    [
        [HI, {"role": "tool", "tool_call_id": "call_x", "content": "42"}],
        # (a user message there closes the call instead: tests/test_e2e_continuity.py)
        [HI, {"role": "assistant", "content": None, "tool_calls": [CALL]},
         {"role": "assistant", "content": "went on"}],
        [HI, {"role": "assistant", "content": "ok"}, {"role": "tool", "tool_call_id": "call_1",
                                                      "content": "42"}],
    ],
    ids=["orphan_tool_result", "assistant_after_unanswered_call", "tool_after_plain_assistant"],
)  # fmt: skip
@pytest.mark.parametrize("history", ["auto", "append"])
def test_422_invalid_message_sequence(
    server: TetherServer, upstream: ScriptedUpstream, messages: list[Any], history: str
) -> None:
    with unchanged(server):
        resp = post(server.url, msgs(*messages), headers={"X-Tether-History": history})
        err = check_error(resp, 422, "invalid_message_sequence")
    assert err["param"] is not None and err["param"].startswith("messages[")
    assert upstream.chat_bodies() == []


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[tuple[TetherServer, str]]:
    """A Tether with one API key, created (by the CLI) before the server starts."""
    srv = TetherServer(tmp_path_factory.mktemp("keyed") / "tether.db", scripted.base_url)
    key = srv.create_key("a")
    srv.start()
    yield srv, key
    srv.stop()


@pytest.mark.parametrize(
    ("path", "authorization", "code"),
    [
        (CHAT, None, "missing_api_key"),
        (CHAT, "Bearer tk_wrong", "invalid_api_key"),
        (CHAT, "Basic dXNlcjpwYXNz", "invalid_api_key"),
        (CHAT, "Bearer", "invalid_api_key"),
        ("/v1/conversations/anything", None, "missing_api_key"),
        ("/v1/models", "Bearer tk_wrong", "invalid_api_key"),
    ],
    ids=["missing", "wrong_key", "basic", "empty_bearer", "conversation", "models"],
)
def test_401_unauthenticated(
    keyed: tuple[TetherServer, str], path: str, authorization: str | None, code: str
) -> None:
    srv, _ = keyed
    headers = {**JSON_CT, **({"Authorization": authorization} if authorization else {})}
    method = "POST" if path == CHAT else "GET"
    with unchanged(srv):
        resp = httpx2.request(
            method, srv.url + path, content=orjson.dumps(OK_BODY), headers=headers
        )
        err = check_error(resp, 401, code)
    assert err["type"] == "authentication_error"


def test_valid_key_works(keyed: tuple[TetherServer, str]) -> None:
    srv, key = keyed
    resp = post(srv.url, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text


def test_503_no_upstream(tmp_path: Path) -> None:
    srv = TetherServer(tmp_path / "no-upstream.db", None)
    srv.env.pop("TETHER_UPSTREAM_BASE_URL", None)  # not inherited from our environment
    srv.env.pop("TETHER_CONFIG", None)
    srv.start()
    try:
        with unchanged(srv):
            err = check_error(post(srv.url), 503, "upstream_not_configured")
        assert "TETHER_UPSTREAM_BASE_URL" in err["message"]
    finally:
        srv.stop()


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize(
    ("item", "status", "code"),
    [
        ({"status": 500}, 502, "upstream_error"),
        ({"status": 503, "error": "overloaded"}, 502, "upstream_error"),
        ({"status": 401}, 502, "upstream_auth_failed"),
        ({"status": 400, "error": CONTEXT_ERROR}, 400, "context_length_exceeded"),
    ],
    ids=["500", "503", "401", "context_length"],
)
def test_upstream_errors(
    server: TetherServer,
    upstream: ScriptedUpstream,
    item: dict[str, Any],
    status: int,
    code: str,
    existing: bool,
) -> None:
    headers = {"X-Tether-Conversation": new_conversation(server)} if existing else {}
    upstream.queue(item)
    with unchanged(server, failed_turns=int(existing)):
        check_error(post(server.url, headers=headers), status, code)


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_502_upstream_unreachable(
    tmp_path: Path, upstream: ScriptedUpstream, existing: bool
) -> None:
    # The conversation is made while the upstream works, then the server restarts without it.
    srv = TetherServer(tmp_path / "unreachable.db", upstream.base_url).start()
    try:
        headers = {"X-Tether-Conversation": new_conversation(srv)} if existing else {}
        srv.stop()
        srv.env["TETHER_UPSTREAM_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
        srv.start()
        with unchanged(srv, failed_turns=int(existing)):
            check_error(post(srv.url, headers=headers), 502, "upstream_unreachable")
    finally:
        srv.stop()


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_504_upstream_timeout(
    server: TetherServer, upstream: ScriptedUpstream, existing: bool
) -> None:
    db = server.db_path.with_name(f"timeout-{existing}.db")
    srv = TetherServer(db, upstream.base_url, TETHER_UPSTREAM_TIMEOUT="0.5").start()
    try:
        headers = {"X-Tether-Conversation": new_conversation(srv)} if existing else {}
        upstream.queue({"delay": 2})
        with unchanged(srv, failed_turns=int(existing)):
            check_error(post(srv.url, headers=headers), 504, "upstream_timeout")
    finally:
        srv.stop()


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_502_stream_cut(server: TetherServer, upstream: ScriptedUpstream, existing: bool) -> None:
    headers = {"X-Tether-Conversation": new_conversation(server)} if existing else {}
    upstream.queue({"fail_after_chunks": 1})
    body = {"messages": [{"role": "user", "content": "a reply long enough to be cut"}]}
    with unchanged(server, failed_turns=int(existing)):
        resp = post(server.url, {**body, "stream": True}, headers=headers)
        assert resp.status_code == 200  # the headers went out before the upstream broke
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert "Traceback" not in resp.text
        events = [ln[5:].strip() for ln in resp.text.splitlines() if ln.startswith("data:")]
        assert events and "[DONE]" not in events
        last = orjson.loads(events[-1])
        assert set(last) == {"error"}, last
        check_envelope(last["error"], "upstream_stream_interrupted")
        assert all("error" not in orjson.loads(e) for e in events[:-1])
