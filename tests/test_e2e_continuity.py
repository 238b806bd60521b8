"""Full-history clients end to end (a real `tether serve`, the scripted upstream, the openai SDK):
re-encoded tool arguments, forks continued instead of re-forked, id-less clients matched to
their conversation (and compacted like any other), dangling tool calls closed."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer

WINDOW = 2000  # as in test_e2e_compaction: compaction above ~1,125 tokens (every test here
# keeps well under it but the one that means to compact)
SUMMARISER = "New messages to fold in"


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    s = TetherServer(
        tmp_path_factory.mktemp("continuity") / "tether.db",
        scripted.base_url,
        TETHER_MODEL_CONTEXT_WINDOWS=f'{{"scripted": {WINDOW}}}',
    ).start()
    yield s
    s.stop()


_opened: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def sdk(srv: TetherServer, **headers: str) -> openai.OpenAI:
    client = openai.OpenAI(
        base_url=f"{srv.url}/v1", api_key="none", max_retries=0, default_headers=headers
    )
    _opened.append(client)
    return client


def send(
    client: openai.OpenAI, messages: list[dict[str, Any]], model: str = "scripted", **kw: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One request: (the assistant message as a client keeps it, the tether object)."""
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, **kw)
    completion = raw.parse()
    tether = (completion.model_extra or {})["tether"]
    assert raw.headers["x-tether-conversation"] == tether["conversation_id"]
    message = completion.choices[0].message.model_dump(exclude_none=True)
    return message, tether


def conversations(srv: TetherServer) -> list[tuple[str, str | None, int]]:
    with srv.db() as conn:
        return conn.execute(
            "SELECT c.id, p.id, c.last_seq FROM conversations c "
            "LEFT JOIN conversations p ON p.pk = c.forked_from_pk ORDER BY c.pk"
        ).fetchall()


def rows(srv: TetherServer, cid: str) -> list[sqlite3.Row]:
    with srv.db() as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(
            "SELECT m.* FROM messages m JOIN conversations c ON c.pk = m.conversation_pk "
            "WHERE c.id = ? ORDER BY m.seq",
            (cid,),
        ).fetchall()


def weather_call(args: str, call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "weather", "arguments": args}}


@pytest.mark.parametrize(
    ("sent", "resent"),
    [
        ('{"city":"Oslo"}', '{"city": "Oslo"}'),
        ('{"city": "Oslo", "days": 2}', '{"days":2,"city":"Oslo"}'),
    ],
)
def test_reencoded_tool_arguments_continue_the_conversation(
    srv: TetherServer, upstream: ScriptedUpstream, sent: str, resent: str
) -> None:
    cid = f"tools-{len(sent)}"
    client = sdk(srv, **{"X-Hermes-Session-Id": cid})
    upstream.queue({"tool_calls": [weather_call(sent, "call_w1")], "finish_reason": "tool_calls"})
    history: list[dict[str, Any]] = [{"role": "user", "content": "weather in Oslo?"}]
    reply, _ = send(client, history)
    assert reply["tool_calls"][0]["function"]["arguments"] == sent
    # the client re-encodes the arguments, as langchain-openai, llm and pydantic-ai do
    reply["tool_calls"][0]["function"]["arguments"] = resent
    history += [reply, {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"}]
    reply, tether = send(client, history)
    assert tether["conversation_id"] == cid and "forked_from" not in tether
    history += [reply, {"role": "user", "content": "and tomorrow?"}]
    _, tether = send(client, history)
    assert tether["conversation_id"] == cid
    stored = rows(srv, cid)
    roles = ["user", "assistant", "tool", "assistant", "user", "assistant"]
    assert [r["role"] for r in stored] == roles
    # stored exactly as the model sent it, not as the client re-encoded it
    assert json.loads(stored[1]["tool_calls"])[0]["function"]["arguments"] == sent
    assert [c[0] for c in conversations(srv)].count(cid) == 1


def test_a_client_that_never_reads_the_fork_id_keeps_growing_the_fork(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    client = sdk(srv, **{"X-Hermes-Session-Id": "edit-1"})
    history: list[dict[str, Any]] = []
    for text in ("one", "two"):
        history.append({"role": "user", "content": text})
        reply, _ = send(client, history)
        history.append(reply)
    edited = [*history[:2], {"role": "user", "content": "TWO, edited"}]
    reply, tether = send(client, edited)
    fork = tether["conversation_id"]
    assert fork != "edit-1" and tether["forked_from"] == {"conversation_id": "edit-1", "seq": 2}
    edited.append(reply)
    for text in ("three", "four"):  # still naming edit-1, as clients that ignore headers do
        edited.append({"role": "user", "content": text})
        reply, tether = send(client, edited)
        assert tether["conversation_id"] == fork and "forked_from" not in tether
        edited.append(reply)
    children = [c for c in conversations(srv) if c[1] == "edit-1"]
    assert children == [(fork, "edit-1", 8)]
    with srv.db() as conn:
        titles = dict(conn.execute("SELECT id, title FROM conversations").fetchall())
    assert titles["edit-1"] == "one" and titles[fork] == "TWO, edited"  # its own title
    assert [r["content"] for r in rows(srv, "edit-1")] == [
        '"one"',
        '"echo: one"',
        '"two"',
        '"echo: two"',
    ]
    # the original still takes its own continuation
    history.append({"role": "user", "content": "original goes on"})
    _, tether = send(client, history)
    assert tether["conversation_id"] == "edit-1"


def test_an_idless_full_history_client_keeps_one_conversation_and_it_compacts(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    client = sdk(srv)
    before = len(conversations(srv))
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    ids, epochs = set(), []
    for turn in range(20):
        words = " ".join(f"t{turn}w{i}" for i in range(40))
        history.append({"role": "user", "content": f"turn {turn}: {words}"})
        reply, tether = send(client, history)
        history.append(reply)
        ids.add(tether["conversation_id"])
        epochs.append(tether["epoch"])
    assert len(ids) == 1, ids
    (cid,) = ids
    assert len(conversations(srv)) == before + 1
    assert len(rows(srv, cid)) == 41  # system + 20 turns, nothing twice
    compactions = [i for i, (a, b) in enumerate(itertools.pairwise(epochs)) if b > a]
    assert compactions, f"never compacted: {epochs}"
    first = compactions[0] + 1
    # later turns run on the checkpoint: the upstream saw the summary, not the whole history
    bodies = [b for b in upstream.chat_bodies() if SUMMARISER not in str(b["messages"][-1])]
    last = bodies[-1]["messages"]
    assert "summary" in last[0]["content"].lower()
    assert len(last) < len(history) - 10
    assert epochs[-1] >= 1 and first < 19
    assert epochs[first + 1] == epochs[first]  # the checkpoint reused, not redone each turn


def test_idless_histories_that_extend_nothing_start_new_conversations(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    client = sdk(srv)
    made = set()
    for n in range(2):
        history: list[dict[str, Any]] = [
            {"role": "user", "content": f"imported {n}"},
            {"role": "assistant", "content": f"from elsewhere {n}"},
            {"role": "user", "content": "go on"},
        ]
        _, tether = send(client, history)
        made.add(tether["conversation_id"])
    assert len(made) == 2
    # opting out: the same history again makes a new conversation instead of continuing
    history.append({"role": "assistant", "content": "echo: go on"})
    history.append({"role": "user", "content": "more"})
    _, t1 = send(client, history)
    _, t2 = send(sdk(srv, **{"X-Tether-Match": "off"}), history)
    assert t1["conversation_id"] in made and t2["conversation_id"] not in made


def test_idless_matching_stays_in_the_tenant(srv: TetherServer, upstream: ScriptedUpstream) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "tenant probe"}]
    reply, first = send(sdk(srv), history)
    history += [reply, {"role": "user", "content": "second"}]
    # the other tenant's database holds nothing of this: a second server, its own key
    _, again = send(sdk(srv), history)
    assert again["conversation_id"] == first["conversation_id"]
    with srv.db() as conn:
        tenants = conn.execute(
            "SELECT DISTINCT tenant_id FROM conversations WHERE id = ?", (first["conversation_id"],)
        ).fetchall()
    assert tenants == [("default",)]


def test_a_user_message_after_an_unanswered_tool_call_closes_it(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    cid = "dangling-1"
    client = sdk(srv, **{"X-Hermes-Session-Id": cid})
    upstream.queue(
        {"tool_calls": [weather_call('{"x": 1}', "call_final")], "finish_reason": "tool_calls"}
    )
    send(client, [{"role": "user", "content": "give me structured output"}])
    raw = httpx2.post(
        f"{srv.url}/v1/chat/completions",
        headers={"X-Hermes-Session-Id": cid},
        json={"model": "scripted", "messages": [{"role": "user", "content": "thanks, next"}]},
        timeout=30,
    )
    assert raw.status_code == 200, raw.text
    turn_id = raw.json()["tether"]["turn_id"]
    stored = rows(srv, cid)
    assert [r["role"] for r in stored] == ["user", "assistant", "tool", "user", "assistant"]
    assert stored[2]["tool_call_id"] == "call_final"
    assert "tether_synthetic" in stored[2]["extra"]
    # the model saw a valid sequence, without Tether's marker field
    sent = upstream.chat_bodies()[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert set(sent[2]) == {"role", "content", "tool_call_id"}
    record = httpx2.get(f"{srv.url}/v1/conversations/{cid}/turns/{turn_id}").json()
    assert record["notes"]["dangling_tool_calls"] == ["call_final"]
    # a full-history client that never had that result still continues, without a fork
    history = [
        {"role": "user", "content": "give me structured output"},
        {"role": "assistant", "tool_calls": [weather_call('{"x":1}', "call_final")]},
        {"role": "user", "content": "thanks, next"},
        {"role": "assistant", "content": "echo: thanks, next"},
        {"role": "user", "content": "and again"},
    ]
    _, tether = send(client, history)
    assert tether["conversation_id"] == cid and len(rows(srv, cid)) == 7


def test_dangling_calls_can_be_rejected_instead(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> None:
    s = TetherServer(
        tmp_path_factory.mktemp("reject") / "tether.db",
        scripted.base_url,
        TETHER_DANGLING_TOOL_CALLS="reject",
    ).start()
    try:
        scripted.queue(
            {"tool_calls": [weather_call("{}", "call_r")], "finish_reason": "tool_calls"}
        )
        headers = {"X-Hermes-Session-Id": "strict"}
        body = {"model": "scripted", "messages": [{"role": "user", "content": "q"}]}
        assert httpx2.post(f"{s.url}/v1/chat/completions", headers=headers, json=body).is_success
        body["messages"] = [{"role": "user", "content": "next"}]
        r = httpx2.post(f"{s.url}/v1/chat/completions", headers=headers, json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_message_sequence"
    finally:
        s.stop()


def test_reply_fields_outside_the_request_schema_are_stored_but_not_sent_back(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    cid = "annotations-1"
    annotations = [{"type": "url_citation", "url_citation": {"url": "https://example.org"}}]
    upstream.queue({"content": "cited", "message_extra": {"annotations": annotations}})
    headers = {"X-Hermes-Session-Id": cid}
    body = {"model": "scripted", "messages": [{"role": "user", "content": "cite something"}]}
    first = httpx2.post(f"{srv.url}/v1/chat/completions", headers=headers, json=body).json()
    message = first["choices"][0]["message"]
    assert message["annotations"] == annotations
    assert message["refusal"] is None  # required by the spec, left out by the upstream
    body["messages"] = [{"role": "user", "content": "next"}]
    assert httpx2.post(f"{srv.url}/v1/chat/completions", headers=headers, json=body).is_success
    sent = upstream.chat_bodies()[-1]["messages"]
    assert sent[1] == {"role": "assistant", "content": "cited"}
    stored = httpx2.get(f"{srv.url}/v1/conversations/{cid}/messages").json()["data"]
    assert stored[1]["annotations"] == annotations
