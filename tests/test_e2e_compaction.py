"""Compaction end to end: a real `tether serve`, the scripted upstream, the openai SDK."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer

WINDOW = 2000  # reserved output 500 -> usable 1500 -> compaction above 1125 tokens
SUMMARISER = "New messages to fold in"  # matches only the summariser's request


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    s = TetherServer(
        tmp_path_factory.mktemp("compaction") / "tether.db",
        scripted.base_url,
        TETHER_MODEL_CONTEXT_WINDOWS=f'{{"scripted": {WINDOW}}}',
    ).start()
    yield s
    s.stop()


def sdk(srv: TetherServer, cid: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{srv.url}/v1",
        api_key="none",
        max_retries=0,
        default_headers={"X-Hermes-Session-Id": cid, **headers},
    )


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def context(srv: TetherServer, cid: str, view: bool = False) -> dict[str, Any]:
    r = httpx2.get(f"{srv.url}/v1/conversations/{cid}/context", params={"view": str(view)})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def chat(client: openai.OpenAI, text: str, **kw: Any) -> tuple[Any, dict[str, Any]]:
    raw = client.chat.completions.with_raw_response.create(
        model="scripted", messages=[{"role": "user", "content": text}], **kw
    )
    completion = raw.parse()
    return raw, (completion.model_extra or {})["tether"]


def test_seed_scenario_same_id_and_upstream_gets_summary_plus_tail(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    client = sdk(srv, "seed-1")
    tethers = []
    for turn in range(30):
        raw, tether = chat(client, f"turn {turn}: " + words(50, f"t{turn}w"))
        assert raw.headers["x-hermes-session-id"] == "seed-1"
        assert tether["conversation_id"] == "seed-1"
        tethers.append(tether)
        if tether["compacted"]:
            break
    else:
        pytest.fail("compaction never triggered")
    assert tether["epoch"] == 1 and raw.headers["x-tether-epoch"] == "1"
    assert tether["tokens_before"] > tether["tokens_after"] > 0
    assert all(not t["compacted"] and t["epoch"] == 0 for t in tethers[:-1])
    bodies = upstream.chat_bodies()
    summariser = [b for b in bodies if SUMMARISER in b["messages"][-1]["content"]]
    calls = context(srv, "seed-1")["checkpoints"][0]["stats"]["summariser_calls"]
    assert len(summariser) == calls >= 1  # a long span is folded in in pieces
    # the turn that compacted already ran on the compacted view
    compacted_call = bodies[-1]["messages"]
    assert compacted_call[0]["role"] == "system"
    assert "SUMMARY of" in compacted_call[0]["content"]
    assert len(compacted_call) < 2 * len(tethers)

    upstream.reset()
    raw, tether = chat(client, "after compaction")
    assert raw.headers["x-hermes-session-id"] == "seed-1"
    assert tether["epoch"] == 1 and tether["compacted"] is False
    sent = upstream.chat_bodies()[-1]["messages"]
    assert sent[0]["role"] == "system" and "SUMMARY of" in sent[0]["content"]
    # never the stale history: turn 0's message is gone from the view, the latest is there
    contents = [m["content"] for m in sent[1:]]
    assert not any(str(c).startswith("turn 0:") for c in contents)
    assert contents[-1] == "after compaction"
    assert sent[1]["role"] != "tool"
    # and the full transcript is still there
    messages = httpx2.get(f"{srv.url}/v1/conversations/seed-1/messages").json()["data"]
    assert len(messages) == 2 * (len(tethers) + 1)
    assert messages[0]["content"].startswith("turn 0:")
    info = context(srv, "seed-1")
    assert info["epoch"] == 1 and len(info["checkpoints"]) == 1
    assert info["checkpoints"][0]["covers_through_seq"] > 0
    assert info["window"] == WINDOW and info["tokens"] < info["compact_above_tokens"]


def test_seed_scenario_streamed_final_chunk_reports_compaction(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    client = sdk(srv, "seed-stream-1")
    for turn in range(30):
        with httpx2.stream(
            "POST",
            f"{srv.url}/v1/chat/completions",
            headers={"X-Hermes-Session-Id": "seed-stream-1"},
            json={
                "model": "scripted",
                "stream": True,
                "messages": [{"role": "user", "content": f"s{turn} " + words(50, "x")}],
            },
        ) as r:
            lines = [line for line in r.iter_lines() if line]
        comments = [line for line in lines if line.startswith(":") and "compacted" in line]
        if comments:
            break
    else:
        pytest.fail("compaction never triggered")
    assert "conversation=seed-stream-1" in comments[0] and "epoch=1" in comments[0]
    assert lines.index(comments[0]) < next(i for i, x in enumerate(lines) if x.startswith("data:"))
    # the same through the SDK: the final chunk's tether object says compacted
    for i in range(5):
        chat(client, f"small {i} " + words(20, "y"))
    final = None
    stream = client.chat.completions.create(
        model="scripted",
        stream=True,
        messages=[{"role": "user", "content": "now"}],
        extra_headers={"X-Tether-Compaction": "now"},
    )
    for chunk in stream:
        delta = chunk.choices[0].delta
        assert delta is not None
        if chunk.choices[0].finish_reason:
            final = (chunk.model_extra or {})["tether"]
    assert final is not None
    assert final["conversation_id"] == "seed-stream-1"
    assert final["compacted"] is True and final["epoch"] == 2


def test_identifiers_survive_ten_compactions(srv: TetherServer, upstream: ScriptedUpstream) -> None:
    planted = [
        "https://git.example.com/acme/falcon/pull/4821",
        "/srv/falcon/config/prod.yaml",
        "ops-lead@acme.example",
        "250 ms",
        "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "FALCON-7731",
        "Project Falcon",
    ]
    client = sdk(srv, "needles-1")
    chat(
        client,
        "Remember: PR https://git.example.com/acme/falcon/pull/4821 changes "
        "/srv/falcon/config/prod.yaml; mail ops-lead@acme.example if p99 exceeds 250 ms; "
        'commit 9fceb02d0ae598e95dc970b74767f19372d61af8 fixes FALCON-7731 for "Project Falcon".',
    )
    for i in range(10):
        for j in range(5):
            chat(client, f"filler {i}.{j} " + words(20, "f"))
        _, tether = chat(client, f"compact {i}", extra_headers={"X-Tether-Compaction": "now"})
        assert tether["compacted"] is True
    info = context(srv, "needles-1", view=True)
    assert info["epoch"] >= 10
    view_text = "\n".join(str(m["content"]) for m in info["view"])
    assert "Remember: PR" not in view_text  # the first turn is long summarised away
    for item in planted:
        assert item in view_text, item
    assert all(item in info["ledger"] for item in planted)


def test_race_messages_committed_during_slow_summary_are_kept(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    """B6: a burst of 10 messages while a compaction runs (slow summariser): exactly one new
    checkpoint, covering only what was committed before it began; nothing lost or merged."""
    client = sdk(srv, "race-1")
    for i in range(10):
        chat(client, f"before {i} " + words(10, "b"))
    before = context(srv, "race-1")
    last_before = before["messages_total"]
    upstream.queue({"match": SUMMARISER, "delay": 2.0, "content": "SUMMARY (slow)"})
    result: dict[str, Any] = {}

    def compact() -> None:
        r = httpx2.post(f"{srv.url}/v1/conversations/race-1/compact", timeout=30)
        result.update(r.json())

    worker = threading.Thread(target=compact)
    worker.start()
    time.sleep(0.3)
    for i in range(5):  # 5 turns = 10 messages committed while the summariser works
        chat(client, f"during {i}")
    worker.join()
    assert result["compacted"] is True
    assert result["covers_through_seq"] <= last_before
    info = context(srv, "race-1", view=True)
    assert info["messages_total"] == last_before + 10
    assert len(info["checkpoints"]) == len(before["checkpoints"]) + 1
    assert [c["epoch"] for c in info["checkpoints"]] == list(range(1, info["epoch"] + 1))
    contents = [m["content"] for m in info["view"][1:]]
    for i in range(5):
        assert f"during {i}" in contents and f"echo: during {i}" in contents
    messages = httpx2.get(f"{srv.url}/v1/conversations/race-1/messages").json()["data"]
    assert [m["seq"] for m in messages] == list(range(1, last_before + 11))
    # the next turn is built on the new checkpoint (the cached view was dropped with it)
    _, tether = chat(client, "after")
    assert tether["epoch"] == info["epoch"]
    sent = upstream.chat_bodies()[-1]["messages"]
    assert "SUMMARY (slow)" in sent[0]["content"]
    assert sent == [*info["view"], {"role": "user", "content": "after"}]


def test_summariser_down_continues_without_loss_then_clear_error(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    client = sdk(srv, "down-1")
    for i in range(4):
        chat(client, f"q{i} " + words(30, "d"))
    before = context(srv, "down-1")
    upstream.queue({"match": SUMMARISER, "status": 500})
    _, tether = chat(client, "compact please", extra_headers={"X-Tether-Compaction": "now"})
    assert tether["compacted"] is False and tether["epoch"] == before["epoch"]
    after = context(srv, "down-1")
    assert after["messages_total"] == before["messages_total"] + 2
    assert after["checkpoints"] == before["checkpoints"]
    # now make it not fit: one message bigger than the model's window, summariser still down
    upstream.queue({"match": SUMMARISER, "status": 500})
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, "huge " + words(1600, "h"))
    assert err.value.code == "context_length_exceeded"
    assert "down-1" in err.value.message
    assert context(srv, "down-1")["messages_total"] == after["messages_total"]


def test_full_history_client_compacts_once_per_threshold_crossing(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    client = sdk(srv, "ui-long-1")
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are helpful."}]
    compactions = 0
    for turn in range(30):
        history.append({"role": "user", "content": f"ui {turn} " + words(40, "u")})
        raw = client.chat.completions.with_raw_response.create(model="scripted", messages=history)  # type: ignore[arg-type]
        completion = raw.parse()
        tether = (completion.model_extra or {})["tether"]
        assert tether["conversation_id"] == "ui-long-1"
        compactions += tether["compacted"]
        history.append({"role": "assistant", "content": completion.choices[0].message.content})
    info = context(srv, "ui-long-1")
    checkpoints = info["checkpoints"]
    assert compactions == len(checkpoints) >= 2
    assert compactions <= 30 // 4  # not once per request
    limit = info["compact_above_tokens"]
    for c in checkpoints:  # each one ran because the view had crossed the threshold
        assert c["tokens_before"] > limit > c["tokens_after"]
    # no duplicates: the transcript holds each message exactly once
    assert info["messages_total"] == 1 + 60
    summariser_calls = [
        b for b in upstream.chat_bodies() if SUMMARISER in str(b["messages"][-1]["content"])
    ]
    assert len(summariser_calls) == sum(c["stats"]["summariser_calls"] for c in checkpoints)


def test_upstream_overflow_compacts_and_retries(tmp_path: Path) -> None:
    small = ScriptedUpstream(context_window=1000)
    srv = TetherServer(tmp_path / "overflow.db", small.base_url).start()  # thinks: 128k window
    try:
        client = sdk(srv, "overflow-1")
        tethers = [chat(client, f"o{turn} " + words(40, "o"))[1] for turn in range(20)]
        assert any(t["compacted"] for t in tethers)
        refused = [r for r in small.requests() if r["path"] == "/v1/chat/completions"]
        assert len(refused) > 20  # summariser calls and the retried turn
        info = context(srv, "overflow-1")
        assert info["window"] == 1000  # learned from the upstream's error message
        assert info["epoch"] >= 1
        assert info["messages_total"] == 40  # every turn whole, none lost
    finally:
        srv.stop()
        small.close()


def test_overflow_with_compaction_off_is_a_clear_error(tmp_path: Path) -> None:
    small = ScriptedUpstream(context_window=300)
    srv = TetherServer(tmp_path / "off.db", small.base_url).start()
    try:
        client = sdk(srv, "off-1", **{"X-Tether-Compaction": "off"})
        chat(client, "short")
        with pytest.raises(openai.BadRequestError) as err:
            chat(client, words(400, "z"))
        assert err.value.code == "context_length_exceeded"
        assert "off-1" in err.value.message
        assert context(srv, "off-1")["messages_total"] == 2
    finally:
        srv.stop()
        small.close()


def test_fork_of_compacted_conversation_inherits_its_view(
    srv: TetherServer, upstream: ScriptedUpstream
) -> None:
    client = sdk(srv, "fork-src-1")
    history: list[dict[str, Any]] = []
    for turn in range(16):
        history.append({"role": "user", "content": f"f{turn} " + words(40, "k")})
        reply = client.chat.completions.create(model="scripted", messages=history)  # type: ignore[arg-type]
        history.append({"role": "assistant", "content": reply.choices[0].message.content})
    parent = context(srv, "fork-src-1")
    assert parent["epoch"] >= 1
    covers = parent["checkpoints"][-1]["covers_through_seq"]
    # regenerate the last answer: same history minus the last reply, edited last question
    edited = [*history[:-2], {"role": "user", "content": "f15 edited"}]
    upstream.reset()
    raw = client.chat.completions.with_raw_response.create(model="scripted", messages=edited)  # type: ignore[arg-type]
    fork_id = raw.headers["x-tether-conversation"]
    tether = (raw.parse().model_extra or {})["tether"]
    assert fork_id != "fork-src-1" and tether["forked_from"]["conversation_id"] == "fork-src-1"
    sent = upstream.chat_bodies()[-1]["messages"]
    assert "SUMMARY of" in sent[0]["content"]  # the fork's view starts from the summary
    assert sent[-1]["content"] == "f15 edited"
    fork = context(srv, fork_id)
    assert fork["epoch"] == 1 and fork["checkpoints"][0]["covers_through_seq"] == covers
    assert context(srv, "fork-src-1")["messages_total"] == parent["messages_total"]


def test_anti_thrash_pauses_compaction_and_says_so(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    # a tail that keeps 95% of the threshold: each compaction can only fold in a sliver
    srv = TetherServer(
        tmp_path / "thrash.db",
        upstream.base_url,
        TETHER_MODEL_CONTEXT_WINDOWS=f'{{"scripted": {WINDOW}}}',
        TETHER_COMPACTION_TAIL_RATIO="0.95",
        TETHER_COMPACTION_MIN_TAIL_MESSAGES="1",
    ).start()
    try:
        client = sdk(srv, "thrash-1")
        for turn in range(40):
            chat(client, f"t{turn} " + words(12, "b"))
        with srv.db() as db:
            rows = db.execute(
                "SELECT t.compacted, t.notes FROM turns t JOIN conversations c "
                "ON c.pk = t.conversation_pk WHERE c.id = 'thrash-1' ORDER BY t.started_at"
            ).fetchall()
        checkpoints = context(srv, "thrash-1")["checkpoints"]
        assert len(checkpoints) >= 2
        assert all(c["stats"]["saved"] < 0.10 for c in checkpoints[-2:])
        paused = [c for c, n in rows if n and "paused" in n]
        assert paused and not any(paused)  # the paused turns ran without compacting
        assert context(srv, "thrash-1")["messages_total"] == 80
    finally:
        srv.stop()
