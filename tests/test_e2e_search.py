"""GET /v1/search on a real server: a word only in a tool output, a Chinese and a Japanese
phrase, a word only in a checkpoint summary, the exact phrase ranked first, a malformed query a
400 with its reason, tenants apart; the same search as the built-in tool conversation_search;
and TETHER_TITLES=auto naming a new conversation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.support import ScriptedUpstream, TetherServer

pytestmark = pytest.mark.e2e
SUMMARISER = "New messages to fold in"  # matches only the summariser's request


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    s = TetherServer(
        tmp_path_factory.mktemp("search") / "tether.db",
        scripted.base_url,
        TETHER_BUILTIN_TOOLS='["conversation_search"]',
        TETHER_TITLES="auto",
        TETHER_MODEL_CONTEXT_WINDOWS='{"scripted": 2000}',
        TETHER_COMPACTION_MIN_TAIL_MESSAGES="2",
    )
    s.create_key("tenant-a")
    s.create_key("tenant-b")
    s.start()
    yield s
    s.stop()


def call(
    srv: TetherServer, method: str, path: str, tenant: str = "tenant-a", **kw: Any
) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {srv.keys[tenant]}", **kw.pop("headers", {})}
    return httpx2.request(method, srv.url + path, headers=headers, timeout=30, **kw)


def say(
    srv: TetherServer, cid: str, messages: list[dict[str, Any]], tenant: str = "tenant-a"
) -> dict[str, Any]:
    body = {"model": "scripted", "messages": messages}
    r = call(srv, "POST", "/v1/chat/completions", tenant, json=body,
             headers={"X-Tether-Conversation": cid})  # fmt: skip
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def search(srv: TetherServer, q: str, tenant: str = "tenant-a", **params: Any) -> Any:
    r = call(srv, "GET", "/v1/search", tenant, params={"q": q, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_search_finds_tool_outputs_cjk_and_summaries(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    # a client tool's result, appended the way a client sends it
    call_ = {"id": "call_w", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Bergen"}'}}  # fmt: skip
    upstream.queue({"match": "weather in Bergen?", "tool_calls": [call_]})
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    body = {"model": "scripted", "messages": user("weather in Bergen?"), "tools": [tool]}
    r = call(srv, "POST", "/v1/chat/completions", json=body,
             headers={"X-Tether-Conversation": "s-tools"})  # fmt: skip
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "tool_calls"
    say(srv, "s-tools", [{"role": "tool", "tool_call_id": "call_w", "content": "fjordwind, 9°C"}])
    say(srv, "s-cjk", user("明天在东京举行的会议几点开始？"))
    say(srv, "s-cjk", user("会議は午前十時に始まります。"))
    long = " ".join(f"w{i}" for i in range(60))  # three turns stay under the threshold
    for i in range(3):
        say(srv, "s-sum", user(f"planning step {i} {long}"))
    upstream.queue({"match": SUMMARISER, "content": "The user settled on the quokkaplan."})
    assert call(srv, "POST", "/v1/conversations/s-sum/compact").json()["compacted"] is True

    hits = search(srv, "fjordwind")
    assert [(h["conversation_id"], h["role"], h["kind"]) for h in hits] == [
        ("s-tools", "tool", "message")
    ]
    start, end = hits[0]["highlights"][0]
    assert hits[0]["snippet"][start:end] == "fjordwind"
    assert [h["seq"] for h in search(srv, "东京举行")] == [1]
    japanese = search(srv, "午前十時")
    assert (japanese[0]["conversation_id"], japanese[0]["role"]) == ("s-cjk", "user")
    assert search(srv, "会議")[0]["conversation_id"] == "s-cjk"  # two characters: a substring
    summary = search(srv, "quokkaplan")
    assert [(h["conversation_id"], h["kind"], h["epoch"]) for h in summary] == [
        ("s-sum", "summary", 1)
    ]
    assert search(srv, "fjordwind", "tenant-b") == []  # tenants apart
    assert search(srv, "quokkaplan", title="no such title") == []  # the list's filters apply
    # not grouped: every message (the three questions and the scripted model's three echoes)
    assert len(search(srv, "planning", group="false")) == 6
    assert len(search(srv, "planning")) == 1


def test_the_exact_phrase_ranks_first_and_bad_queries_are_400s(srv: TetherServer) -> None:
    say(srv, "s-apart", user("the brown cat slept while a quick dog ran past the door"))
    say(srv, "s-exact", user("a quick brown cat slept on the mat by the door"))
    ranked = [h["conversation_id"] for h in search(srv, "quick brown cat")]
    assert ranked[:2] == ["s-exact", "s-apart"]
    assert [h["conversation_id"] for h in search(srv, '"quick brown cat"')] == ["s-exact"]
    assert {h["conversation_id"] for h in search(srv, "quic*")} >= {"s-exact", "s-apart"}
    for bad in ('"unbalanced', "cat AND", "(cat", "NEAR(cat"):
        r = call(srv, "GET", "/v1/search", params={"q": bad})
        assert r.status_code == 400, (bad, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_query" and error["param"] == "q", bad
        assert "malformed" in error["message"]
    for empty in ("", "   "):
        assert call(srv, "GET", "/v1/search", params={"q": empty}).status_code == 400
    assert call(srv, "GET", "/v1/search").status_code == 400
    assert search(srv, "?!") == []  # nothing searchable: no hit, not an error
    # punctuation a person types is not syntax: `error: refused` are two words
    say(srv, "s-colon", user("the error: connection refused at dawn"))
    assert [h["conversation_id"] for h in search(srv, "error: connection refused")] == ["s-colon"]
    assert "score" not in search(srv, "dawn")[0]  # bm25 counts every tenant's texts: not shown


def test_conversation_search_is_a_tool_over_the_callers_tenant(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    say(srv, "theirs", user("the zephyrcode is 4471"), tenant="tenant-b")
    say(srv, "mine-old", user("my locker zephyrcode is 1234"))
    search_call = {"id": "cs1", "type": "function", "function": {
        "name": "conversation_search", "arguments": '{"query": "zephyrcode"}'}}  # fmt: skip
    # (matched to this turn's message: the background title calls of new conversations take
    # unmatched items too)
    asked = "what was my locker code?"
    upstream.queue(
        {"match": asked, "tool_calls": [search_call]}, {"match": asked, "content": "It is 1234."}
    )
    reply = say(srv, "mine-new", user(asked))
    assert reply["choices"][0]["message"]["content"] == "It is 1234."
    rounds = [b for b in upstream.chat_bodies() if any(
        m.get("tool_call_id") == "cs1" for m in b["messages"])]  # fmt: skip
    result = next(m for m in rounds[0]["messages"] if m.get("tool_call_id") == "cs1")
    assert "mine-old" in result["content"] and "1234" in result["content"]
    assert "4471" not in result["content"] and "theirs" not in result["content"]


def test_titles_auto_names_a_new_conversation(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    said = "help me plan a weekend in lisbon"  # in the turn's request and the title's
    upstream.queue(
        {"match": said, "content": "Sure, let us plan."},
        {"match": said, "content": "“Lisbon Weekend Plans.”"},
    )
    say(srv, "titled", user(said))
    deadline = time.monotonic() + 10
    title = None
    while time.monotonic() < deadline:
        title = call(srv, "GET", "/v1/conversations/titled").json()["title"]
        if title == "Lisbon Weekend Plans":
            break
        time.sleep(0.05)
    assert title == "Lisbon Weekend Plans"
    asked = upstream.chat_bodies()[-1]
    assert "title" in asked["messages"][0]["content"] and asked["max_tokens"] == 24
    # a title set by a person stays: the next new conversation is renamed before its title
    # call answers
    other = "another topic entirely"
    upstream.queue(
        {"match": other, "content": "ok"},
        {"match": other, "content": "Machine Title", "delay": 1.0},
    )
    say(srv, "renamed", user(other))
    assert (
        call(srv, "PATCH", "/v1/conversations/renamed", json={"title": "Mine"}).status_code == 200
    )
    time.sleep(1.5)
    assert call(srv, "GET", "/v1/conversations/renamed").json()["title"] == "Mine"
