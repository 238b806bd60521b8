"""The agent loop at its edges: a turn whose own tool outputs outgrow the context window
(compacted between rounds, every upstream request inside the window, the id unchanged), and a
kill -9 in the middle of a tool round (the turn incomplete, its journal kept, nothing of it in
the transcript). A real `tether serve`, the stdio MCP server of tests/tool_servers/ledger.py, a
scripted upstream that refuses a prompt over its window, the `openai` SDK."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer, with_ledger
from tether.testing.script import SUMMARISER_MARKER, estimate_prompt_tokens

WINDOW = 3000


@pytest.fixture(scope="module")
def small() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream(context_window=WINDOW)
    yield up
    up.close()


@pytest.fixture
def srv(tmp_path: Path, small: ScriptedUpstream) -> Iterator[TetherServer]:
    small.reset()
    windows = f'{{"scripted": {WINDOW}}}'
    s = with_ledger(tmp_path / "tether.db", small.base_url, TETHER_MODEL_CONTEXT_WINDOWS=windows)
    yield s
    s.stop()


def sdk(srv: TetherServer, cid: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{srv.url}/v1",
        api_key="none",
        max_retries=0,
        timeout=60,
        default_headers={"X-Hermes-Session-Id": cid},
    )


def call(name: str, args: str, call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def test_tool_outputs_that_outgrow_the_window_are_compacted_then_pruned(
    srv: TetherServer, small: ScriptedUpstream
) -> None:
    client = sdk(srv, "window-1")
    for i in range(2):  # ~1,200 tokens of history: under the compaction threshold (1,687)
        client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": words(70, f"h{i}x")}]
        )
    small.reset()

    def big(i: int) -> dict[str, Any]:  # ~650 tokens of output each
        return call("mcp__ledger__big", '{"chars": 5000}', f"b{i}")

    # round 1: two outputs, which no longer fit beside the history (usable: 2,250 tokens):
    # nothing of this turn is older, so the history is compacted; rounds 2 and 3 add one
    # output each: then this turn's older outputs are shown pruned. (`match`: the summariser's
    # requests, to the same upstream, must not take these items.)
    rounds = [[big(0), big(1)], [big(2)], [big(3)]]
    small.queue(*({"match": "read the big files", "tool_calls": r} for r in rounds))
    reply = client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "read the big files"}]
    )
    assert reply.choices[0].message.content == "echo: read the big files"
    assert reply.tether["conversation_id"] == "window-1"  # type: ignore[attr-defined]
    assert reply.tether["compacted"] is True  # type: ignore[attr-defined]
    bodies = small.chat_bodies()
    summarising = [SUMMARISER_MARKER in str(b["messages"]) for b in bodies]
    chat = [b for b, s in zip(bodies, summarising, strict=True) if not s]
    assert len(chat) == 4  # 3 tool rounds + the answer, none refused by the upstream
    first_summary = summarising.index(True)
    assert first_summary == 1, "compacted between the first and the second model call"
    for body in bodies:  # every upstream request inside the window
        wanted = estimate_prompt_tokens(body["messages"]) + (body.get("max_tokens") or 0)
        assert wanted <= WINDOW, wanted
    last = chat[-1]["messages"]
    results = [m for m in last if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in results] == ["b0", "b1", "b2", "b3"]  # groups whole
    calls = [m for m in last if m["role"] == "assistant" and m.get("tool_calls")]
    assert [[c["id"] for c in m["tool_calls"]] for m in calls] == [["b0", "b1"], ["b2"], ["b3"]]
    assert "pruned to fit the context window" in results[0]["content"]
    assert results[-1]["content"] == "x" * 5000
    r = httpx2.get(f"{srv.url}/v1/conversations/window-1")
    assert r.json()["epoch"] == 1 and r.json()["id"] == "window-1"
    stored = httpx2.get(f"{srv.url}/v1/conversations/window-1/messages").json()["data"]
    outputs = [m["content"] for m in stored if m["role"] == "tool"]
    assert outputs == ["x" * 5000] * 4  # stored whole: only the model's view was pruned


def test_kill_9_in_a_tool_round_leaves_the_turn_incomplete_with_its_journal(
    srv: TetherServer, small: ScriptedUpstream
) -> None:
    client = sdk(srv, "crash-1")
    one_turn_then_a_slow_round(client, small, "k")
    threading.Thread(
        target=lambda: _ignore(
            lambda: client.chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "slow"}]
            )
        ),
        daemon=True,
    ).start()
    deadline = time.monotonic() + 20
    while len(small.chat_bodies()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # inside the 30 s sleep of round 2
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    srv.logfile.close()
    srv.start()
    with srv.db() as db:
        rows = db.execute(
            "SELECT t.id, t.status FROM turns t JOIN conversations c ON c.pk = t.conversation_pk "
            "WHERE c.id = 'crash-1' ORDER BY t.started_at"
        ).fetchall()
    assert [status for _, status in rows] == ["completed", "incomplete"]
    record = httpx2.get(f"{srv.url}/v1/conversations/crash-1/turns/{rows[1][0]}").json()
    assert record["status"] == "incomplete"
    assert [(s["call_id"], s["status"]) for s in record["tool_steps"]] == [("k1", "ok")]
    stored = httpx2.get(f"{srv.url}/v1/conversations/crash-1/messages").json()["data"]
    assert [m["content"] for m in stored] == ["hi", "echo: hi"]  # nothing of the killed turn


def _ignore(fn: Any) -> None:
    """The request of a server killed under it: its failure is the point."""
    with contextlib.suppress(openai.APIError):
        fn()


@pytest.fixture
def hurried(tmp_path: Path, small: ScriptedUpstream) -> Iterator[TetherServer]:
    """A server whose turns have 2 s in all (TETHER_MAX_TURN_SECONDS)."""
    small.reset()
    s = with_ledger(tmp_path / "tether.db", small.base_url, TETHER_MAX_TURN_SECONDS="2")
    yield s
    s.stop()


def one_turn_then_a_slow_round(client: openai.OpenAI, small: ScriptedUpstream, tag: str) -> None:
    """A first turn ("hi"), then script the next: a quick call, then a 30 s one."""
    client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
    small.reset()
    small.queue(
        {"tool_calls": [call("mcp__ledger__add", '{"a": 1, "b": 2}', f"{tag}1")]},
        {"tool_calls": [call("mcp__ledger__sleep", '{"seconds": 30}', f"{tag}2")]},
    )


def test_a_deadline_in_a_tool_round_leaves_the_turn_incomplete_with_what_ran(
    hurried: TetherServer, small: ScriptedUpstream
) -> None:
    client = sdk(hurried, "late-1")
    one_turn_then_a_slow_round(client, small, "d")
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "too slow"}]
        )
    assert caught.value.status_code == 504
    with hurried.db() as db:
        (turn_id,) = db.execute(
            "SELECT id FROM turns WHERE status != 'completed' ORDER BY started_at"
        ).fetchone()
    record = httpx2.get(f"{hurried.url}/v1/conversations/late-1/turns/{turn_id}").json()
    assert record["status"] == "incomplete"  # tools ran: side effects may have happened
    assert record["error"]["code"] == "turn_deadline_exceeded"
    steps = [(s["call_id"], s["status"]) for s in record["tool_steps"]]
    assert steps == [("d1", "ok"), ("d2", "interrupted")]
    stored = httpx2.get(f"{hurried.url}/v1/conversations/late-1/messages").json()["data"]
    assert [m["content"] for m in stored] == ["hi", "echo: hi"]
