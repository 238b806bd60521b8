"""The in-memory view cache (engine/cache.py) against the database: a turn that finds its
conversation cached reads nothing, and sends the upstream its ready-made JSON. What the model
gets must equal the view `GET …/context?view=true` renders from the database, turn after turn;
a checkpoint committed outside a turn reaches the next turn; and if the database ever moved on
behind the cache, the commit refuses the turn and the next one reads afresh."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx2

from tests.support import ScriptedUpstream, TetherServer

CALL = {
    "id": "call_c1",
    "type": "function",
    "function": {"name": "lookup", "arguments": '{"q": "tide"}'},
}


def post(server: TetherServer, cid: str, messages: list[dict[str, Any]], **headers: str) -> Any:
    return httpx2.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "scripted", "messages": messages},
        headers={"X-Hermes-Session-Id": cid, **headers},
        timeout=30,
    )


def view(server: TetherServer, cid: str) -> list[dict[str, Any]]:
    r = httpx2.get(f"{server.url}/v1/conversations/{cid}/context", params={"view": "true"})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["view"]
    return data


def test_each_turn_sends_the_view_the_database_holds(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    cid = "cache-equal"
    turns: list[tuple[list[dict[str, Any]], dict[str, str]]] = [
        ([{"role": "user", "content": "first"}], {}),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "second"}], {}),
        ([{"role": "user", "content": [{"type": "text", "text": "third, in parts"}]}], {}),
        ([{"role": "user", "content": "look it up"}], {}),  # answered with a tool call
        ([{"role": "tool", "tool_call_id": "call_c1", "content": '{"tide": "high"}'}], {}),
        ([{"role": "user", "content": "thanks", "name": "ana"}], {}),
    ]
    upstream.queue({"match": "look it up", "tool_calls": [CALL]})
    for i, (messages, headers) in enumerate(turns):
        before = view(server, cid) if i else []
        r = post(server, cid, messages, **headers)
        assert r.status_code == 200, r.text
        sent = upstream.chat_bodies()[-1]["messages"]
        new = [m for m in messages if m["role"] != "system"]
        system = [m for m in messages if m["role"] == "system"]
        if system:  # the request's instructions replace the stored ones from this turn on
            before = [*system, *(m for m in before if m["role"] != "system")]
        assert sent == [*before, *new], f"turn {i + 1}"
    assert [m["role"] for m in view(server, cid)] == [
        "system",
        *["user", "assistant"] * 3,
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]


def test_a_conversation_changed_behind_the_cache_is_refused_once_then_read_afresh(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """Nothing but the serving process writes conversations; if something did, the commit's
    check of the last seq catches it: 409 once (nothing stored), then the next turn sees it."""
    cid = "cache-stale"
    assert post(server, cid, [{"role": "user", "content": "one"}]).status_code == 200
    assert post(server, cid, [{"role": "user", "content": "two"}]).status_code == 200  # cached
    with sqlite3.connect(server.db_path) as db:  # an outside writer
        pk, last = db.execute(
            "SELECT pk, last_seq FROM conversations WHERE id = ?", (cid,)
        ).fetchone()
        db.execute(
            "INSERT INTO messages (conversation_pk, seq, role, content, tokens, created_at) "
            "VALUES (?, ?, 'user', ?, 3, ?)",
            (pk, last + 1, '"written outside"', time.time()),
        )
        db.execute("UPDATE conversations SET last_seq = ? WHERE pk = ?", (last + 1, pk))
    refused = post(server, cid, [{"role": "user", "content": "three"}])
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "conversation_busy"
    r = post(server, cid, [{"role": "user", "content": "three again"}])
    assert r.status_code == 200, r.text
    sent = [m["content"] for m in upstream.chat_bodies()[-1]["messages"]]
    assert sent[-2:] == ["written outside", "three again"]
    assert "three" not in sent
    assert [m["content"] for m in view(server, cid)][-3:] == [
        "written outside",
        "three again",
        "echo: three again",
    ]
