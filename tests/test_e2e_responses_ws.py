"""The Responses API's WebSocket mode through the official `openai` SDK
(`client.responses.connect()`) against a real server and the scripted upstream: two responses
on one socket, the second continuing the first (the upstream receives both user messages),
each one's events in the SSE stream's order with consecutive sequence numbers and valid against
the Open Responses schemas; `store: false` continued on the socket (and nowhere else: not
readable, unknown to another socket); `previous_response_not_found` and bad frames as `error`
events on a socket that stays usable; creates sent at once answered one after another; a client
that leaves mid-response (its turn commits); the handshake refused without a valid key once keys
exist, and from a web page's origin in open mode."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support import ScriptedUpstream, TetherServer, close_sdk_clients, sdk_client
from tests.test_e2e_responses import EVENT_SCHEMAS, check

pytestmark = [
    pytest.mark.e2e,
    # the SDK calls websockets' connect() outside a `with` (its `realtime` extra pins
    # websockets<16; 17, which uvicorn[standard] brings, warns about it)
    pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager"),
]
ENDS = ("response.completed", "response.failed", "response.incomplete", "error")
USER_TEXT = {"type": "message", "role": "user"}


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    s = TetherServer(tmp_path_factory.mktemp("responses_ws") / "tether.db", scripted.base_url)
    s.start()
    yield s
    close_sdk_clients(s)
    s.stop()


def client(srv: TetherServer, key: str = "none") -> openai.OpenAI:
    return sdk_client(srv, key)


def ws_url(srv: TetherServer) -> str:
    return srv.url.replace("http://", "ws://") + "/v1/responses"


def one_response(conn: Any) -> list[dict[str, Any]]:
    """The events of one response from an SDK connection, as sent (to its last one)."""
    events = []
    for event in conn:
        events.append(event.to_dict())
        if event.type in ENDS:
            return events
    raise AssertionError(f"the socket closed after {events}")


def raw_response(ws: ClientConnection) -> list[dict[str, Any]]:
    """The same from a plain websockets client: every frame a text frame."""
    events = []
    while True:
        frame = ws.recv(timeout=30)
        assert isinstance(frame, str), frame  # text frames, not binary
        events.append(json.loads(frame))
        if events[-1]["type"] in ENDS:
            return events


def create(ws: ClientConnection, **body: Any) -> None:
    ws.send(json.dumps({"type": "response.create", "model": "scripted", **body}))


def check_stream(spec: dict[str, Any], events: list[dict[str, Any]], text: str) -> str:
    """The SSE stream's order, consecutive sequence numbers from 0, each event valid; the
    response's id."""
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ], kinds
    assert set(kinds[4:-4]) == {"response.output_text.delta"}, kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ], kinds
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if e["type"].endswith(".delta")) == text
    for e in events:
        check(spec, EVENT_SCHEMAS[e["type"]], e)
    rid: str = events[-1]["response"]["id"]
    assert {e["response"]["id"] for e in events if "response" in e} == {rid}
    return rid


def users(upstream: ScriptedUpstream) -> list[Any]:
    """The user messages of the last model call."""
    return [m["content"] for m in upstream.chat_bodies()[-1]["messages"] if m["role"] == "user"]


def check_error(spec: dict[str, Any], event: dict[str, Any], status: int, code: str) -> None:
    assert event["type"] == "error" and event["status"] == status, event
    assert event["error"]["code"] == code, event
    assert isinstance(event["error"]["message"], str) and event["error"]["message"]
    check(spec, "WebSocketErrorEvent", event)


def test_connect_holds_two_responses_on_one_socket(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    with client(srv).responses.connect() as conn:
        conn.response.create(model="scripted", input="first on the socket")
        first = check_stream(spec, one_response(conn), "echo: first on the socket")
        conn.response.create(
            model="scripted",
            previous_response_id=first,
            input=[{**USER_TEXT, "content": [{"type": "input_text", "text": "second, same"}]}],
        )
        events = one_response(conn)
        second = check_stream(spec, events, "echo: second, same")
    assert users(upstream) == ["first on the socket", "second, same"]
    final = events[-1]["response"]
    assert final["previous_response_id"] == first and final["store"] is True
    check(spec, "ResponseResource", final)
    stored = httpx2.get(f"{srv.url}/v1/responses/{second}", timeout=10).json()
    assert stored["output"][0]["content"][0]["text"] == "echo: second, same"
    assert stored["conversation"] == final["conversation"]


def test_store_false_continues_on_the_socket_only(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    head = client(srv).responses.create(model="scripted", input="the lighthouse is red")
    with client(srv).responses.connect() as conn:
        rids = []
        for i, (text, previous) in enumerate(
            (("unstored one", head.id), ("unstored two", None), ("unstored three", None))
        ):
            conn.response.create(
                model="scripted",
                input=text,
                store=False,
                previous_response_id=previous or rids[-1],
                instructions=f"instructions {i}",
            )
            events = one_response(conn)
            rids.append(check_stream(spec, events, f"echo: {text}"))
            final = events[-1]["response"]
            assert final["store"] is False and final["previous_response_id"] == (
                previous or rids[-2]
            )
            assert final["instructions"] == f"instructions {i}"
        # the model saw the whole chain: the stored head, then each unstored response
        sent = upstream.chat_bodies()[-1]["messages"]
        assert [(m["role"], m["content"]) for m in sent] == [
            ("system", "instructions 2"),  # a previous response's instructions do not carry
            ("user", "the lighthouse is red"),
            ("assistant", "echo: the lighthouse is red"),
            ("user", "unstored one"),
            ("assistant", "echo: unstored one"),
            ("user", "unstored two"),
            ("assistant", "echo: unstored two"),
            ("user", "unstored three"),
        ]
        for rid in rids:  # nothing of them was stored
            assert httpx2.get(f"{srv.url}/v1/responses/{rid}", timeout=10).status_code == 404
        conv = f"{srv.url}/v1/conversations/{head.conversation.id}"
        assert httpx2.get(conv, timeout=10).json()["message_count"] == 2
        # a stored response continuing the chain stores it: what the model saw, then itself
        conn.response.create(model="scripted", input="keep this", previous_response_id=rids[-1])
        kept = check_stream(spec, one_response(conn), "echo: keep this")
    assert httpx2.get(f"{srv.url}/v1/responses/{kept}", timeout=10).status_code == 200
    assert httpx2.get(conv, timeout=10).json()["message_count"] == 10
    with connect(ws_url(srv)) as ws:  # another socket knows none of the unstored ones
        create(ws, input="and now?", store=False, previous_response_id=rids[-1])
        (error,) = raw_response(ws)
    check_error(spec, error, 404, "previous_response_not_found")


def test_errors_are_events_and_the_socket_stays_open(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    with client(srv).responses.connect() as conn:
        conn.response.create(model="scripted", input="x", previous_response_id="resp_" + "0" * 32)
        (error,) = one_response(conn)
        check_error(spec, error, 404, "previous_response_not_found")
        assert error["error"]["param"] == "previous_response_id"
        conn.response.create(model="scripted", input="still here")
        check_stream(spec, one_response(conn), "echo: still here")
    with connect(ws_url(srv)) as ws:
        for frame, status, code in (
            ("{not json", 400, "invalid_json"),
            ('["an array"]', 400, "invalid_request"),
            ('{"type": "session.update"}', 400, "invalid_request"),
            ('{"type": "response.create", "model": "scripted"}', 400, "invalid_request"),
            (
                '{"type": "response.create", "input": "x", "background": true}',
                400,
                "invalid_request",
            ),
        ):
            ws.send(frame)
            (error,) = raw_response(ws)
            check_error(spec, error, status, code)
        create(ws, input="after the errors", stream_id="lane_1")
        events = raw_response(ws)
        assert {e["stream_id"] for e in events} == {"lane_1"}
        check_stream(
            spec,
            [{k: v for k, v in e.items() if k != "stream_id"} for e in events],
            "echo: after the errors",
        )


def test_creates_sent_at_once_are_answered_in_turn(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    upstream.queue({"match": "slow first", "chunk_delay": 0.05})
    with connect(ws_url(srv)) as ws:
        create(ws, input="slow first")
        create(ws, input="quick second")
        first, second = raw_response(ws), raw_response(ws)
    check_stream(spec, first, "echo: slow first")
    check_stream(spec, second, "echo: quick second")


def test_a_client_leaving_mid_response_leaves_its_turn_to_commit(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"match": "long goodbye", "content": "a" * 40, "chunk_delay": 0.1})
    with connect(ws_url(srv)) as ws:
        create(ws, input="long goodbye")
        created = json.loads(ws.recv(timeout=30))
        rid = created["response"]["id"]
    deadline = time.monotonic() + 20
    while True:
        got = httpx2.get(f"{srv.url}/v1/responses/{rid}", timeout=10).json()
        if got.get("status") == "completed":
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.2)
    assert got["output"][0]["content"][0]["text"] == "a" * 40


def test_the_handshake_needs_a_valid_key_once_keys_exist(
    tmp_path: Path, upstream: ScriptedUpstream, srv: TetherServer, spec: dict[str, Any]
) -> None:
    keyed = TetherServer(tmp_path / "keyed.db", upstream.base_url)
    key, other = keyed.create_key("acme"), keyed.create_key("other")
    keyed.start()
    try:
        for api_key, code in (("", "missing_api_key"), ("nope", "invalid_api_key")):
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            with pytest.raises(InvalidStatus) as refused:
                connect(ws_url(keyed), additional_headers=headers).close()
            assert refused.value.response.status_code == 401
            assert json.loads(refused.value.response.body or b"")["error"]["code"] == code
        with pytest.raises(InvalidStatus) as refused:
            client(keyed, "nope").responses.connect().enter()
        assert refused.value.response.status_code == 401
        with client(keyed, key).responses.connect() as conn:
            conn.response.create(model="scripted", input="acme's question")
            rid = check_stream(spec, one_response(conn), "echo: acme's question")
        mine = httpx2.get(f"{keyed.url}/v1/responses/{rid}", headers=bearer(key), timeout=10)
        assert mine.status_code == 200, mine.text
        theirs = httpx2.get(f"{keyed.url}/v1/responses/{rid}", headers=bearer(other), timeout=10)
        assert theirs.status_code == 404  # the socket's responses are its tenant's
    finally:
        keyed.stop()
    # open mode needs no key, so a web page's socket is refused by its Origin
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(srv), origin="http://evil.example").close()  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
