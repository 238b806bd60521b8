"""The Responses API through the official `openai` SDK against a real server and the scripted
upstream: a chain by previous_response_id (the upstream receives the whole conversation), a
fork from an older response, `conversation` continuing a chat-completions conversation and
back again (one transcript), a client function call round trip, the stream's events in the
spec's order with consecutive sequence numbers (client.responses.stream to
get_final_response), and every response object and event valid against the Open Responses
schemas (../shared/specs/openresponses/openapi.json)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer, close_sdk_clients, sdk_client

pytestmark = pytest.mark.e2e
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedStreamingEvent",
    "response.in_progress": "ResponseInProgressStreamingEvent",
    "response.output_item.added": "ResponseOutputItemAddedStreamingEvent",
    "response.output_item.done": "ResponseOutputItemDoneStreamingEvent",
    "response.content_part.added": "ResponseContentPartAddedStreamingEvent",
    "response.content_part.done": "ResponseContentPartDoneStreamingEvent",
    "response.output_text.delta": "ResponseOutputTextDeltaStreamingEvent",
    "response.output_text.done": "ResponseOutputTextDoneStreamingEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaStreamingEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneStreamingEvent",
    "response.completed": "ResponseCompletedStreamingEvent",
    "response.failed": "ResponseFailedStreamingEvent",
    "response.incomplete": "ResponseIncompleteStreamingEvent",
}


def check(spec: dict[str, Any], name: str, value: Any) -> None:
    """`value` validates against the spec's component schema `name`."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(value)


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    s = TetherServer(tmp_path_factory.mktemp("responses") / "tether.db", scripted.base_url)
    s.start()
    yield s
    close_sdk_clients(s)
    s.stop()


def client(srv: TetherServer) -> openai.OpenAI:
    return sdk_client(srv)


def raw_create(srv: TetherServer, **body: Any) -> dict[str, Any]:
    r = httpx2.post(f"{srv.url}/v1/responses", json={"model": "scripted", **body}, timeout=30)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_a_chain_by_previous_response_id_and_a_fork(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    sdk = client(srv)
    first = sdk.responses.create(model="scripted", input="first question")
    assert first.status == "completed" and first.output_text == "echo: first question"
    raw = raw_create(srv, input="raw check")  # as sent on the wire, every required field
    check(spec, "ResponseResource", raw)
    assert raw["previous_response_id"] is None and raw["completed_at"] is not None
    previous, ids = first.id, [first.id]
    for i in range(4):
        nxt = sdk.responses.create(
            model="scripted", input=f"turn {i}", previous_response_id=previous
        )
        assert nxt.previous_response_id == previous and nxt.output_text == f"echo: turn {i}"
        previous = nxt.id
        ids.append(nxt.id)
    sent = upstream.chat_bodies()[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "first question",
        "turn 0",
        "turn 1",
        "turn 2",
        "turn 3",
    ]
    assert sdk.responses.retrieve(previous).output_text == "echo: turn 3"
    # read back, a response repeats what its request asked, as it did when made
    asked = sdk.responses.create(
        model="scripted",
        input="with settings",
        instructions="be brief",
        metadata={"ticket": "T-1"},
        temperature=0.25,
        max_output_tokens=64,
    )
    back = sdk.responses.retrieve(asked.id)
    assert (back.instructions, back.metadata, back.temperature, back.max_output_tokens) == (
        "be brief",
        {"ticket": "T-1"},
        0.25,
        64,
    )
    assert sdk.responses.retrieve(ids[1]).previous_response_id == ids[0]
    conv = httpx2.get(f"{srv.url}/v1/responses/{previous}", timeout=10).json()
    check(spec, "ResponseResource", conv)  # read back: as valid as when it was made
    assert conv["output"][0]["content"][0]["text"] == "echo: turn 3"
    # from an older response: a fork at that point, the original untouched
    fork = raw_create(srv, input="another way", previous_response_id=ids[1])
    main = raw_create(srv, input="main goes on", previous_response_id=previous)
    assert fork["conversation"]["id"] != main["conversation"]["id"]
    got = httpx2.get(f"{srv.url}/v1/conversations/{fork['conversation']['id']}", timeout=10).json()
    assert got["forked_from"] == {"conversation_id": main["conversation"]["id"], "seq": 4}
    assert got["message_count"] == 6
    missing = httpx2.post(
        f"{srv.url}/v1/responses",
        timeout=10,
        json={"model": "scripted", "input": "x", "previous_response_id": "resp_" + "0" * 32},
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "previous_response_not_found"
    # the response's input, as items; a finished response's cancel answers it as it ended
    listed = httpx2.get(f"{srv.url}/v1/responses/{ids[1]}/input_items", timeout=10).json()
    assert [(i["type"], i["role"], i["content"][0]["text"]) for i in listed["data"]] == [
        ("message", "user", "turn 0")
    ]
    check(spec, "Message", {**listed["data"][0], "content": listed["data"][0]["content"]})
    cancelled = httpx2.post(f"{srv.url}/v1/responses/{ids[1]}/cancel", timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "completed"
    gone = httpx2.get(f"{srv.url}/v1/responses/resp_{'0' * 32}", timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "response_not_found"
    # deleting a response: it is unknown from then on; its conversation keeps its messages
    deleted = httpx2.delete(f"{srv.url}/v1/responses/{ids[2]}", timeout=10)
    assert deleted.json() == {"id": ids[2], "object": "response", "deleted": True}
    assert sdk.responses.delete(ids[3]) is None  # the SDK's own call
    for rid in ids[2:4]:
        assert httpx2.get(f"{srv.url}/v1/responses/{rid}", timeout=10).status_code == 404
        items = httpx2.get(f"{srv.url}/v1/responses/{rid}/input_items", timeout=10)
        assert items.status_code == 404
        again = httpx2.post(
            f"{srv.url}/v1/responses",
            json={"model": "scripted", "input": "x", "previous_response_id": rid},
            timeout=10,
        )
        assert again.json()["error"]["code"] == "previous_response_not_found"
    assert httpx2.delete(f"{srv.url}/v1/responses/{ids[2]}", timeout=10).status_code == 404
    kept = httpx2.get(f"{srv.url}/v1/conversations/{main['conversation']['id']}", timeout=10)
    assert kept.json()["message_count"] == 12  # five turns, the main line's sixth: all there


def test_chat_completions_and_responses_share_one_transcript(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    sdk = client(srv)
    chat = sdk.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "started in chat"}],
        extra_headers={"X-Tether-Conversation": "both-doors"},
    )
    assert chat.choices[0].message.content == "echo: started in chat"
    resp = sdk.responses.create(
        model="scripted", input="then responses", extra_body={"conversation": "both-doors"}
    )
    assert resp.output_text == "echo: then responses"
    back = sdk.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "and back"}],
        extra_headers={"X-Tether-Conversation": "both-doors"},
    )
    assert back.choices[0].message.content == "echo: and back"
    page = httpx2.get(f"{srv.url}/v1/conversations/both-doors/messages", timeout=10).json()
    assert [(m["role"], m["content"]) for m in page["data"]] == [
        ("user", "started in chat"),
        ("assistant", "echo: started in chat"),
        ("user", "then responses"),
        ("assistant", "echo: then responses"),
        ("user", "and back"),
        ("assistant", "echo: and back"),
    ]


def test_a_client_function_call_round_trip(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    call = {
        "id": "call_weather",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
    }
    upstream.queue({"match": "weather in Oslo", "tool_calls": [call]})
    tool = {"type": "function", "name": "weather", "parameters": {"type": "object"}}
    first = raw_create(srv, input="weather in Oslo?", tools=[tool])
    check(spec, "ResponseResource", first)
    (item,) = first["output"]
    assert (item["type"], item["call_id"], item["name"]) == (
        "function_call",
        "call_weather",
        "weather",
    )
    assert json.loads(item["arguments"]) == {"city": "Oslo"}
    assert upstream.chat_bodies()[-1]["tools"][0]["function"]["name"] == "weather"
    done = raw_create(
        srv,
        previous_response_id=first["id"],
        input=[{"type": "function_call_output", "call_id": "call_weather", "output": "rain, 9°C"}],
        tools=[tool],
    )
    assert done["output"][0]["type"] == "message"
    sent = upstream.chat_bodies()[-1]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_weather", "content": "rain, 9°C"}
    assert sent[-2]["tool_calls"][0]["id"] == "call_weather"


def test_the_stream_follows_the_spec_event_by_event(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    events = []
    with httpx2.stream(
        "POST",
        f"{srv.url}/v1/responses",
        timeout=30,
        json={"model": "scripted", "input": "stream me", "stream": True},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if e["type"].endswith(".delta")) == "echo: stream me"
    for e in events:
        check(spec, EVENT_SCHEMAS[e["type"]], e)
    # the SDK's own accumulator reads the same stream to its final response
    with client(srv).responses.stream(model="scripted", input="sdk stream") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "echo: sdk stream" and final.output_text == "echo: sdk stream"


def test_a_streamed_function_call_follows_the_spec(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    call = {
        "id": "call_stream",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Tromsø"}'},
    }
    upstream.queue({"match": "stream a call", "tool_calls": [call]})
    tool = {"type": "function", "name": "weather", "parameters": {"type": "object"}}
    events = []
    with httpx2.stream(
        "POST",
        f"{srv.url}/v1/responses",
        timeout=30,
        json={"model": "scripted", "input": "stream a call", "stream": True, "tools": [tool]},
    ) as r:
        assert r.status_code == 200
        events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert set(kinds[3:-3]) == {"response.function_call_arguments.delta"}
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for e in events:
        check(spec, EVENT_SCHEMAS[e["type"]], e)
    done = events[-2]["item"]
    assert (done["call_id"], done["name"], json.loads(done["arguments"])) == (
        "call_stream",
        "weather",
        {"city": "Tromsø"},
    )
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["function_call"]
    check(spec, "ResponseResource", final)


def rows(db: Path) -> dict[str, int]:
    """Every table's row count in the server's file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def test_store_false_answers_and_leaves_no_rows(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    sdk = client(srv)
    head = sdk.responses.create(model="scripted", input="remember the lighthouse")
    older = sdk.responses.create(model="scripted", input="and then", previous_response_id=head.id)
    httpx2.get(f"{srv.url}/v1/search", params={"q": "lighthouse"}, timeout=10)  # index drained
    before = rows(srv.db_path)
    alone = raw_create(srv, input="a passing thought", store=False)
    check(spec, "ResponseResource", alone)
    assert alone["store"] is False and alone["conversation"] is None
    assert alone["output"][0]["content"][0]["text"] == "echo: a passing thought"
    # continuing a stored conversation unstored: the model sees its history, nothing is added
    cont = sdk.responses.create(
        model="scripted", input="what was it?", previous_response_id=older.id, store=False
    )
    assert cont.output_text == "echo: what was it?"
    sent = upstream.chat_bodies()[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "remember the lighthouse",
        "and then",
        "what was it?",
    ]
    with sdk.responses.stream(
        model="scripted", input="streamed, unstored", store=False, previous_response_id=older.id
    ) as stream:
        final = stream.get_final_response()
    assert final.output_text == "echo: streamed, unstored"
    keyed = httpx2.post(
        f"{srv.url}/v1/responses",
        json={"model": "scripted", "input": "keyed", "store": False},
        headers={"Idempotency-Key": "unstored-1"},
        timeout=10,
    )
    assert keyed.status_code == 200, keyed.text
    httpx2.get(f"{srv.url}/v1/search", params={"q": "unstored"}, timeout=10)
    assert rows(srv.db_path) == before  # no table gained or lost a row
    for rid in (alone["id"], cont.id):  # an unstored response cannot be read back
        assert httpx2.get(f"{srv.url}/v1/responses/{rid}", timeout=10).status_code == 404
    # from an older response it would fork (a stored conversation): refused, not stored
    refused = httpx2.post(
        f"{srv.url}/v1/responses",
        json={"model": "scripted", "input": "x", "store": False, "previous_response_id": head.id},
        timeout=10,
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "previous_response_id"
    assert rows(srv.db_path) == before


def test_bad_requests_are_400s(srv: TetherServer) -> None:
    for body, param in (
        ({"model": "scripted"}, "input"),
        ({"model": "scripted", "input": [{"type": "reasoning"}]}, "input[0].type"),
        ({"model": "scripted", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0]"),
        (
            {"model": "scripted", "input": "x", "conversation": "c", "previous_response_id": "r"},
            "conversation",
        ),
    ):
        r = httpx2.post(f"{srv.url}/v1/responses", json=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.json())
