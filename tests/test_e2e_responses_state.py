"""The Responses API's state across compaction, through the `openai` SDK against a real server
on a small window (compaction every few turns) and the scripted upstream: a five-turn chain by
previous_response_id and by conversation across a compaction (the upstream gets the summary and
the tail; the last id still continues; an id from before an explicit compaction too),
`client.responses.compact()` on a stored conversation and on bare input, each continued from
its output, and a cut stream resumed with `starting_after`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer, close_sdk_clients, sdk_client
from tests.test_e2e_responses import EVENT_SCHEMAS, check

pytestmark = pytest.mark.e2e
WINDOW = 2000  # usable 1,500 tokens: compaction above 1,125
SUMMARISER = "New messages to fold in"


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    s = TetherServer(
        tmp_path_factory.mktemp("responses-state") / "tether.db",
        scripted.base_url,
        TETHER_MODEL_CONTEXT_WINDOWS=f'{{"scripted": {WINDOW}}}',
    )
    s.start()
    yield s
    close_sdk_clients(s)
    s.stop()


def sdk(srv: TetherServer) -> openai.OpenAI:
    return sdk_client(srv)


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def turn_bodies(upstream: ScriptedUpstream) -> list[dict[str, Any]]:
    """What the upstream got for turns (not the summariser's requests)."""
    return [
        b
        for b in upstream.chat_bodies()
        if not any(SUMMARISER in str(m.get("content")) for m in b["messages"])
    ]


def raw(srv: TetherServer, **body: Any) -> dict[str, Any]:
    r = httpx2.post(f"{srv.url}/v1/responses", json={"model": "scripted", **body}, timeout=30)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_a_five_turn_chain_by_previous_response_id_across_a_compaction(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    made = [raw(srv, input="turn 0: " + words(90, "a0w"))]
    for i in range(1, 5):
        made.append(
            raw(srv, input=f"turn {i}: " + words(90, f"a{i}w"), previous_response_id=made[-1]["id"])
        )
    conversation = made[0]["conversation"]["id"]
    assert {m["conversation"]["id"] for m in made} == {conversation}  # one id, always
    assert any(m["tether"]["compacted"] for m in made), [m["tether"] for m in made]
    last = turn_bodies(upstream)[-1]["messages"]
    assert "SUMMARY of" in last[0]["content"]  # the compacted view: summary, then the tail
    assert all("turn 0:" not in str(m["content"]) for m in last)
    assert last[-1]["content"].startswith("turn 4:")
    after = raw(srv, input="and the next", previous_response_id=made[-1]["id"])
    assert after["conversation"]["id"] == conversation
    assert "forked_from" not in after["tether"]
    # an id from before an explicit compaction still continues the live conversation
    compacted = httpx2.post(f"{srv.url}/v1/conversations/{conversation}/compact", timeout=30)
    assert compacted.status_code == 200 and compacted.json()["compacted"], compacted.text
    again = raw(srv, input="still here?", previous_response_id=after["id"])
    assert again["conversation"]["id"] == conversation and "forked_from" not in again["tether"]
    assert again["tether"]["epoch"] == compacted.json()["epoch"]


def test_the_same_chain_by_conversation(srv: TetherServer, upstream: ScriptedUpstream) -> None:
    first = raw(srv, input="c-turn 0: " + words(90, "c0w"))
    conversation = first["conversation"]["id"]
    compactions = 0
    for i in range(1, 5):
        nxt = raw(srv, input=f"c-turn {i}: " + words(90, f"c{i}w"), conversation=conversation)
        assert nxt["conversation"]["id"] == conversation
        compactions += nxt["tether"]["compacted"]
    assert compactions >= 1
    last = turn_bodies(upstream)[-1]["messages"]
    assert "SUMMARY of" in last[0]["content"] and last[-1]["content"].startswith("c-turn 4:")


def test_compact_a_stored_conversation_then_continue_from_its_output(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    client = sdk(srv)
    head = client.responses.create(model="scripted", input="k-turn 0: " + words(90, "k0w"))
    for i in range(1, 3):
        head = client.responses.create(
            model="scripted",
            input=f"k-turn {i}: " + words(90, f"k{i}w"),
            previous_response_id=head.id,
        )
    conversation = raw(srv, input="k-turn 3", previous_response_id=head.id)
    compact = httpx2.post(
        f"{srv.url}/v1/responses/compact",
        json={"model": "scripted", "previous_response_id": conversation["id"]},
        timeout=30,
    )
    assert compact.status_code == 200, compact.text
    check(spec, "CompactResource", compact.json())
    out = client.responses.compact(model="scripted", previous_response_id=conversation["id"])
    assert out.object == "response.compaction" and out.output[-1].type == "compaction"
    given = [item.model_dump(exclude_none=True, warnings=False) for item in out.output]
    nxt = client.responses.create(
        model="scripted", input=[*given, {"role": "user", "content": "continue from here"}]
    )
    assert nxt.output_text == "echo: continue from here"
    got = httpx2.get(f"{srv.url}/v1/responses/{nxt.id}", timeout=10).json()
    assert got["conversation"]["id"] == conversation["conversation"]["id"]  # the same one
    sent = turn_bodies(upstream)[-1]["messages"]
    assert "SUMMARY of" in sent[0]["content"] and sent[-1]["content"] == "continue from here"
    assert [m["content"] for m in sent].count("continue from here") == 1  # the echo not re-added


def test_compact_bare_input_stores_nothing_and_continues(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    client = sdk(srv)
    before = httpx2.get(f"{srv.url}/v1/conversations", params={"limit": 100}, timeout=10).json()
    out = client.responses.compact(
        model="scripted",
        input=[
            {"role": "user", "content": "plan a trip to Lisbon"},
            {"role": "assistant", "content": "Lisbon in May: trams, tiles, pastries."},
            {"role": "user", "content": "and the budget?"},
        ],
    )
    check(spec, "CompactResource", out.model_dump(exclude_none=True, warnings=False))
    after = httpx2.get(f"{srv.url}/v1/conversations", params={"limit": 100}, timeout=10).json()
    assert after["data"] == before["data"]  # nothing stored
    assert [i.type for i in out.output] == ["message", "message", "compaction"]  # users, then it
    given = [item.model_dump(exclude_none=True, warnings=False) for item in out.output]
    nxt = client.responses.create(
        model="scripted", input=[*given, {"role": "user", "content": "go"}]
    )
    assert nxt.output_text == "echo: go"
    sent = turn_bodies(upstream)[-1]["messages"]
    assert sent[0]["role"] == "system" and "SUMMARY of" in sent[0]["content"]
    summarised = [b for b in upstream.chat_bodies() if SUMMARISER in str(b["messages"])][-1]
    assert "Lisbon in May" in summarised["messages"][-1]["content"]  # what it summarised
    assert [m["content"] for m in sent[1:]] == ["plan a trip to Lisbon", "and the budget?", "go"]


def test_compact_needs_a_model_and_a_tether_item(srv: TetherServer) -> None:
    r = httpx2.post(f"{srv.url}/v1/responses/compact", json={"input": "x"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_required"
    forged = [
        {"type": "compaction", "encrypted_content": "gAAAA-not-ours"},
        {"role": "user", "content": "x"},
    ]
    r = httpx2.post(
        f"{srv.url}/v1/responses", json={"model": "scripted", "input": forged}, timeout=10
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[0].encrypted_content"


def test_a_cut_stream_resumed_with_starting_after(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    upstream.queue({"content": "one two three four five six", "chunk_delay": 0.05})
    seen: list[dict[str, Any]] = []
    with httpx2.stream(
        "POST",
        f"{srv.url}/v1/responses",
        json={"model": "scripted", "input": "count for me", "stream": True},
        timeout=30,
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
            if len(seen) == 5:
                break  # the connection is cut here
    rid = seen[0]["response"]["id"]
    rest: list[dict[str, Any]] = []
    with httpx2.stream(
        "GET",
        f"{srv.url}/v1/responses/{rid}",
        params={"stream": "true", "starting_after": seen[-1]["sequence_number"]},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        rest = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ")]
    events = seen + rest
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "one two three four five six"
    for e in events:
        check(spec, EVENT_SCHEMAS[e["type"]], e)
    # the SDK's accumulator replays from the start and skips what it had
    with sdk(srv).responses.stream(response_id=rid, starting_after=4) as stream:
        final = stream.get_final_response()
    assert final.output_text == text
    bad = httpx2.get(
        f"{srv.url}/v1/responses/{rid}",
        params={"stream": "true", "starting_after": "x"},
        timeout=10,
    )
    assert bad.status_code == 400
