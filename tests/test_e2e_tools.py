"""Server-side tools end to end: a real `tether serve` running a real stdio MCP server
(tests/tool_servers/ledger.py) and its built-in tools, the scripted upstream scripted to call
them, and the official `openai` SDK as the client."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer, docs_http, wait_logged
from tether.testing.processes import stop

LEDGER = Path(__file__).parent / "tool_servers" / "ledger.py"
DOCS = Path(__file__).parent / "tool_servers" / "docs_http.py"


def config(tmp: Path, docs_url: str = "") -> Path:
    path = tmp / "tether.toml"
    docs = f'[[mcp_servers]]\nname = "docs"\nurl = "{docs_url}"\n' if docs_url else ""
    path.write_text(
        f"""
builtin_tools = ["current_time"]
max_tool_rounds = 4
approval_timeout = 3
max_tool_output_chars = 1000

[[mcp_servers]]
name = "ledger"
command = [{str(sys.executable)!r}, {str(LEDGER)!r}]
timeout = 2

[[mcp_servers]]
name = "gated"
command = [{str(sys.executable)!r}, {str(LEDGER)!r}]
tools = ["add"]
approval = "always"

{docs}
[tenants.guest]
tools = ["current_time"]
"""
    )
    return path


@pytest.fixture(scope="module")
def docs_url() -> Iterator[str]:
    proc, url = docs_http()
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream, docs_url: str
) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("tools")
    conf = config(tmp, docs_url)
    s = TetherServer(tmp / "tether.db", scripted.base_url, TETHER_CONFIG=str(conf))
    s.start()
    s.create_key("team")
    s.create_key("guest")
    wait_logged(s, "mcp.up", 3)  # ledger, gated, docs
    yield s
    s.stop()


def sdk(srv: TetherServer, cid: str, tenant: str = "team", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{srv.url}/v1",
        api_key=srv.keys[tenant],
        max_retries=0,
        default_headers={"X-Hermes-Session-Id": cid, **headers},
    )


def call(name: str, args: str, call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def transcript(srv: TetherServer, cid: str, tenant: str = "team") -> list[dict[str, Any]]:
    r = httpx2.get(
        f"{srv.url}/v1/conversations/{cid}/messages",
        headers={"Authorization": f"Bearer {srv.keys[tenant]}"},
    )
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def turn(srv: TetherServer, cid: str, turn_id: str) -> dict[str, Any]:
    r = httpx2.get(
        f"{srv.url}/v1/conversations/{cid}/turns/{turn_id}",
        headers={"Authorization": f"Bearer {srv.keys['team']}"},
    )
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_a_server_tool_runs_on_the_server_and_the_client_gets_the_answer(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"tool_calls": [call("mcp__ledger__add", '{"a": 2, "b": 3}', "c1")]})
    reply = sdk(srv, "json-1").chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "add two and three"}]
    )
    message = reply.choices[0].message
    assert message.content == "echo: add two and three" and not message.tool_calls
    assert reply.choices[0].finish_reason == "stop"
    first, second = upstream.chat_bodies()
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert {"current_time", "mcp__ledger__add", "mcp__ledger__sleep"} <= offered.keys()
    assert offered["mcp__ledger__add"]["parameters"]["properties"].keys() == {"a", "b"}
    assert "untrusted data" in first["messages"][0]["content"]  # outputs framed as data
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "5"}
    stored = transcript(srv, "json-1")
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["id"] == "c1" and stored[2]["content"] == "5"
    steps = turn(srv, "json-1", reply.tether["turn_id"])["tool_steps"]  # type: ignore[attr-defined]
    assert [(s["tool"], s["source"], s["status"], s["output_chars"]) for s in steps] == [
        ("mcp__ledger__add", "mcp:ledger", "ok", 1)
    ]


def test_a_streamable_http_mcp_server_answers_a_streamed_turn(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"tool_calls": [call("mcp__docs__lookup", '{"topic": "epochs"}', "d1")]})
    chunks = list(
        sdk(srv, "http-1").chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "look it up"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "echo: look it up"
    )
    assert transcript(srv, "http-1")[2]["content"] == "docs on epochs"


def test_streamed_the_client_sees_progress_and_the_answer_never_the_server_call(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"tool_calls": [call("mcp__ledger__echo", '{"text": "hi"}', "c1")]})
    chunks = list(
        sdk(srv, "stream-1").chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "say hi"}], stream=True
        )
    )
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: say hi"
    progress = [c.tether["tool"] for c in chunks if "tool" in (getattr(c, "tether", None) or {})]  # type: ignore[attr-defined]
    assert [(p["event"], p["name"]) for p in progress] == [
        ("started", "mcp__ledger__echo"),
        ("finished", "mcp__ledger__echo"),
    ]
    assert progress[1]["status"] == "ok"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    stored = transcript(srv, "stream-1")
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[2]["content"] == "hi"


def test_parallel_calls_run_at_once_and_a_three_round_chain_completes(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue(
        {
            "tool_calls": [
                call("mcp__ledger__sleep", '{"seconds": 0.6}', "p1"),
                call("mcp__ledger__sleep", '{"seconds": 0.6}', "p2"),
                call("current_time", "{}", "p3"),
            ]
        },
        {"tool_calls": [call("mcp__ledger__add", '{"a": 1, "b": 1}', "r2")]},
        {"tool_calls": [call("mcp__ledger__add", '{"a": 2, "b": 2}', "r3")]},
    )
    reply = sdk(srv, "chain-1").chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "chain"}]
    )
    assert reply.choices[0].message.content == "echo: chain"
    steps = turn(srv, "chain-1", reply.tether["turn_id"])["tool_steps"]  # type: ignore[attr-defined]
    usage = turn(srv, "chain-1", reply.tether["turn_id"])["notes"]["usage_all_calls"]  # type: ignore[attr-defined]
    assert usage["calls"] == 4 and usage["prompt_tokens"] > reply.usage.prompt_tokens  # type: ignore[union-attr]
    assert [(s["round"], s["call_id"], s["status"]) for s in steps][:3] == [
        (1, "p1", "ok"),
        (1, "p2", "ok"),
        (1, "p3", "ok"),
    ] or sorted((s["round"], s["call_id"]) for s in steps) == [
        (1, "p1"),
        (1, "p2"),
        (1, "p3"),
        (2, "r2"),
        (3, "r3"),
    ]
    sleeps = [s for s in steps if s["call_id"] in ("p1", "p2")]
    # both sleeps started before either finished: they ran concurrently
    assert max(s["started_at"] for s in sleeps) < min(s["finished_at"] for s in sleeps)
    roles = [m["role"] for m in transcript(srv, "chain-1")]
    assert roles == [
        "user",
        "assistant",
        "tool",
        "tool",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]


def test_a_client_tool_and_a_server_tool_in_one_message(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    client_tool = {
        "type": "function",
        "function": {"name": "get_location", "parameters": {"type": "object"}},
    }
    upstream.queue(
        {
            "tool_calls": [
                call("mcp__ledger__add", '{"a": 4, "b": 5}', "s1"),
                call("get_location", "{}", "k1"),
            ]
        }
    )
    client = sdk(srv, "mixed-1")
    reply = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "where and sum"}],
        tools=[client_tool],  # type: ignore[list-item]
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [c.id for c in calls] == ["k1"] and reply.choices[0].finish_reason == "tool_calls"
    stored = transcript(srv, "mixed-1")
    assert [m["role"] for m in stored] == ["user", "assistant", "tool"]
    assert [c["id"] for c in stored[1]["tool_calls"]] == ["s1", "k1"]
    assert stored[2] == {**stored[2], "tool_call_id": "s1", "content": "9"}
    final = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "tool", "tool_call_id": "k1", "content": "Paris"}],
        tools=[client_tool],  # type: ignore[list-item]
    )
    assert final.choices[0].message.content == "echo: where and sum"
    sent = upstream.chat_bodies()[-1]["messages"]
    assert [m.get("tool_call_id") for m in sent[-2:]] == ["s1", "k1"]


def test_a_failing_a_slow_and_a_crashing_tool_become_error_results(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue(
        {
            "tool_calls": [
                call("mcp__ledger__fail", "{}", "f1"),
                call("mcp__ledger__sleep", '{"seconds": 10}', "t1"),
                call("mcp__ledger__add", '{"a": "x"}', "v1"),
            ]
        },
        {"tool_calls": [call("mcp__ledger__crash", "{}", "x1")]},
    )
    started = time.monotonic()
    reply = sdk(srv, "errors-1").chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "break things"}]
    )
    assert reply.choices[0].message.content == "echo: break things"
    assert time.monotonic() - started < 8  # the 10 s sleep was cut at its 2 s timeout
    results = {
        m["tool_call_id"]: m["content"] for m in transcript(srv, "errors-1") if m["role"] == "tool"
    }
    assert "ledger refused" in results["f1"]
    assert "did not answer within 2 s" in results["t1"]
    assert "invalid arguments" in results["v1"] and "nothing was run" in results["v1"]
    assert "failed" in results["x1"] or "down" in results["x1"]
    steps = turn(srv, "errors-1", reply.tether["turn_id"])["tool_steps"]  # type: ignore[attr-defined]
    assert {s["call_id"]: s["status"] for s in steps} == {
        "f1": "error",
        "t1": "timeout",
        "v1": "invalid_arguments",
        "x1": "error",
    }
    # the crashed server is restarted: a later call works
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        upstream.queue({"tool_calls": [call("mcp__ledger__add", '{"a": 1, "b": 2}', "a1")]})
        sdk(srv, "errors-2").chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "again"}]
        )
        last = transcript(srv, "errors-2")[-2]
        if last["content"] == "3":
            break
        time.sleep(0.5)
    assert last["content"] == "3", last


def test_a_large_output_reaches_the_model_cut_with_a_note_and_the_journal_keeps_its_size(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"tool_calls": [call("mcp__ledger__big", '{"chars": 5000}', "L1")]})
    reply = sdk(srv, "cap-1").chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "big"}]
    )
    seen = upstream.chat_bodies()[-1]["messages"][-1]["content"]
    assert seen.startswith("x" * 1000) and not seen.startswith("x" * 1001)
    assert "5,000 characters, the first 1,000 shown" in seen
    steps = turn(srv, "cap-1", reply.tether["turn_id"])["tool_steps"]  # type: ignore[attr-defined]
    assert [(s["status"], s["output_chars"]) for s in steps] == [("ok", 5000)]


def test_a_keyed_streamed_tool_turn_replays_its_progress_and_runs_its_tools_once(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"tool_calls": [call("mcp__ledger__add", '{"a": 20, "b": 22}', "i1")]})
    body = {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": "42?"}]}
    headers = {
        "Authorization": f"Bearer {srv.keys['team']}",
        "X-Hermes-Session-Id": "keyed-1",
        "Idempotency-Key": "tool-turn-1",
    }

    def post() -> httpx2.Response:
        r = httpx2.post(f"{srv.url}/v1/chat/completions", json=body, headers=headers, timeout=20)
        assert r.status_code == 200, r.text
        return r

    first, again = post(), post()
    assert again.headers.get("idempotent-replayed") == "true"
    datas = [line for line in first.text.splitlines() if line.startswith("data: ")]
    assert [line for line in again.text.splitlines() if line.startswith("data: ")] == datas
    assert sum('"tool":{"event":"finished"' in d for d in datas) == 1
    assert len(upstream.chat_bodies()) == 2  # one turn: two model calls, no third on replay
    assert [m["role"] for m in transcript(srv, "keyed-1")] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


def test_a_runaway_model_stops_at_the_round_cap(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue(*({"tool_calls": [call("current_time", "{}", f"loop{i}")]} for i in range(10)))
    reply = sdk(srv, "runaway-1").chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "forever"}]
    )
    bodies = upstream.chat_bodies()
    assert len(bodies) == 5  # 4 rounds (max_tool_rounds = 4), then one call without tools
    assert "tools" not in bodies[-1] and all("tools" in b for b in bodies[:-1])
    assert "limit of 4 tool rounds" in (reply.choices[0].message.content or "")
    assert not reply.choices[0].message.tool_calls
    record = turn(srv, "runaway-1", reply.tether["turn_id"])  # type: ignore[attr-defined]
    assert "TETHER_MAX_TOOL_ROUNDS" in record["notes"]["tool_rounds"]
    assert len(record["tool_steps"]) == 4


def test_a_tool_the_tenant_or_the_request_does_not_allow_is_never_run(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    for client, cid in (
        (sdk(srv, "guest-1", tenant="guest"), "guest-1"),
        (sdk(srv, "narrow-1", **{"X-Tether-Tools": "current_time"}), "narrow-1"),
    ):
        upstream.reset()
        upstream.queue({"tool_calls": [call("mcp__ledger__pid", "{}", "n1")]})
        tenant = "guest" if cid == "guest-1" else "team"
        reply = client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "pid?"}]
        )
        assert reply.choices[0].message.content == "echo: pid?"
        first = upstream.chat_bodies()[0]
        assert [t["function"]["name"] for t in first["tools"]] == ["current_time"]
        result = transcript(srv, cid, tenant)[2]
        assert "not available to this conversation" in result["content"]
        assert "nothing was run" in result["content"]
    none = sdk(srv, "none-1", **{"X-Tether-Tools": "none"})
    upstream.reset()
    none.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "x"}])
    assert "tools" not in upstream.chat_bodies()[0]


def approvals(srv: TetherServer, cid: str) -> list[dict[str, Any]]:
    """The calls waiting in the conversation; a conversation its first turn has not stored yet
    exists only while a call of that turn waits (else 404: nothing waits)."""
    r = httpx2.get(
        f"{srv.url}/v1/conversations/{cid}/approvals",
        headers={"Authorization": f"Bearer {srv.keys['team']}"},
    )
    if r.status_code == 404:
        assert r.json()["error"]["code"] == "conversation_not_found"
        return []
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def decide(srv: TetherServer, cid: str, waiting: dict[str, Any], decision: str) -> int:
    r = httpx2.post(
        f"{srv.url}/v1/conversations/{cid}/turns/{waiting['turn_id']}"
        f"/approvals/{waiting['call_id']}",
        json={"decision": decision},
        headers={"Authorization": f"Bearer {srv.keys['team']}"},
    )
    return r.status_code


def waiting_call(srv: TetherServer, cid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = approvals(srv, cid)
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no call waited for approval")


@pytest.mark.parametrize("decision", ["approve", "deny", "timeout"])
def test_a_json_turn_waits_for_approval(
    srv: TetherServer, upstream: ScriptedUpstream, decision: str
) -> None:
    cid = f"approve-json-{decision}"
    upstream.queue({"tool_calls": [call("mcp__gated__add", '{"a": 3, "b": 4}', "g1")]})
    replies: list[Any] = []
    thread = threading.Thread(
        target=lambda: replies.append(
            sdk(srv, cid).chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "gated"}]
            )
        )
    )
    thread.start()
    waiting = waiting_call(srv, cid)
    assert (waiting["tool"], waiting["arguments"]) == ("mcp__gated__add", '{"a": 3, "b": 4}')
    assert decide(srv, cid, {**waiting, "call_id": "other"}, "deny") == 404
    if decision != "timeout":
        assert decide(srv, cid, waiting, decision) == 200
    thread.join(10)
    assert replies and replies[0].choices[0].message.content == "echo: gated"
    result = transcript(srv, cid)[2]
    if decision == "approve":
        assert result["content"] == "7"
    elif decision == "deny":
        assert "a person denied this call" in result["content"]
    else:  # approval_timeout = 3 s
        assert "no approval for this call of mcp__gated__add within 3 s" in result["content"]
    assert decide(srv, cid, waiting, "approve") == 404  # decided (or timed out) already
    assert approvals(srv, cid) == []


def test_a_streamed_turn_shows_the_approval_and_times_out_as_a_denial(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"tool_calls": [call("mcp__gated__add", '{"a": 1, "b": 1}', "g2")]})
    started = time.monotonic()
    chunks = list(
        sdk(srv, "approve-stream-1").chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "wait"}], stream=True
        )
    )
    events = [
        c.tether["tool"]["event"] for c in chunks if "tool" in (getattr(c, "tether", None) or {})
    ]  # type: ignore[attr-defined]
    assert events == ["approval_required", "finished"]
    assert 3 <= time.monotonic() - started < 10  # approval_timeout = 3 s
    assert "no approval for this call" in transcript(srv, "approve-stream-1")[2]["content"]


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_a_streamed_turn_decided_while_it_waits(
    srv: TetherServer, upstream: ScriptedUpstream, decision: str
) -> None:
    cid = f"approve-stream-{decision}"
    upstream.queue({"tool_calls": [call("mcp__gated__add", '{"a": 5, "b": 5}', "g3")]})
    seen: list[str] = []
    stream = sdk(srv, cid).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "go"}], stream=True
    )
    for chunk in stream:
        tool = (getattr(chunk, "tether", None) or {}).get("tool")
        if tool:
            seen.append(tool["event"])
            if tool["event"] == "approval_required":
                waiting = waiting_call(srv, cid)
                assert turn(srv, cid, waiting["turn_id"])["status"] == "awaiting_approval"
                assert decide(srv, cid, waiting, decision) == 200
    if decision == "approve":
        assert seen == ["approval_required", "started", "finished"]
        assert transcript(srv, cid)[2]["content"] == "10"
    else:
        assert seen == ["approval_required", "finished"]  # never started
        assert "a person denied this call" in transcript(srv, cid)[2]["content"]
