"""Compaction triggers through the seams (docs/contract.md §1, §2; docs/compaction.md): a long
conversation over the threshold compacts and keeps its id, `X-Tether-Compaction: now` and
`off`, and an upstream's context overflow — the real app in-process, FakeUpstream, the memory
store."""

from __future__ import annotations

from typing import Any

import pytest

from tests.inprocess import App, error_code, running, tether_of, user, words
from tether.testing.fake import FakeUpstream

pytestmark = pytest.mark.asyncio(loop_scope="session")

WINDOW = 2000  # reserved output 500 -> usable 1500 -> compaction above 1125 tokens
SUMMARISER = "New messages to fold in"  # only the summariser's request holds it


def summariser_calls(app: App) -> list[dict[str, Any]]:
    return [b for b in app.upstream.requests if SUMMARISER in str(b["messages"][-1]["content"])]


async def test_a_conversation_over_the_threshold_compacts_and_keeps_its_id() -> None:
    async with running(model_context_windows={"scripted": WINDOW}) as app:
        tethers = []
        for turn in range(30):
            r = await app.say("long-1", f"turn {turn}: " + words(50, f"t{turn}w"))
            assert r.headers["x-tether-conversation"] == "long-1"
            tethers.append(tether_of(r))
            if tethers[-1]["compacted"]:
                break
        else:
            pytest.fail("compaction never triggered")
        last = tethers[-1]
        assert last["conversation_id"] == "long-1" and last["epoch"] == 1
        assert r.headers["x-tether-epoch"] == "1"
        assert last["tokens_before"] > last["tokens_after"] > 0
        assert all(not t["compacted"] and t["epoch"] == 0 for t in tethers[:-1])
        info = await app.context("long-1")
        assert len(summariser_calls(app)) == info["checkpoints"][0]["stats"]["summariser_calls"]
        # the turn that compacted ran on the compacted view: the summary, then the tail
        sent = app.upstream.requests[-1]["messages"]
        assert sent[0]["role"] == "system" and "SUMMARY of" in sent[0]["content"]
        assert not any(str(m["content"]).startswith("turn 0:") for m in sent)
        assert sent[-1]["content"].startswith(f"turn {len(tethers) - 1}:")
        # nothing of the transcript is lost, and the id never changed
        transcript = await app.transcript("long-1")
        assert len(transcript) == 2 * len(tethers)
        assert transcript[0][1].startswith("turn 0:")
        assert info["epoch"] == 1 and len(info["checkpoints"]) == 1
        assert info["window"] == WINDOW and info["tokens"] < info["compact_above_tokens"]
        after = await app.say("long-1", "after compaction")
        assert tether_of(after)["epoch"] == 1 and tether_of(after)["compacted"] is False


async def test_compaction_now_compacts_a_short_conversation_on_request() -> None:
    async with running(model_context_windows={"scripted": WINDOW}) as app:
        for i in range(4):
            assert tether_of(await app.say("now-1", f"small {i} " + words(20, "y")))["epoch"] == 0
        r = await app.say("now-1", "compact please", **{"X-Tether-Compaction": "now"})
        tether = tether_of(r)
        assert tether["compacted"] is True and tether["epoch"] == 1
        assert tether["conversation_id"] == "now-1"
        assert len(summariser_calls(app)) >= 1
        assert (await app.context("now-1"))["epoch"] == 1
        assert len(await app.transcript("now-1")) == 10


async def test_compaction_now_on_a_stream_is_announced_and_on_the_final_chunk() -> None:
    async with running(model_context_windows={"scripted": WINDOW}) as app:
        for i in range(4):
            await app.say("now-stream", f"small {i} " + words(20, "y"))
        r = await app.chat(
            [user("now")],
            {"X-Hermes-Session-Id": "now-stream", "X-Tether-Compaction": "now"},
            stream=True,
        )
        lines = [line for line in r.text.splitlines() if line]
        comments = [line for line in lines if line.startswith(": tether compacted")]
        assert len(comments) == 1
        assert "conversation=now-stream" in comments[0] and "epoch=1" in comments[0]
        first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
        assert lines.index(comments[0]) < first_data
        final = [line for line in lines if '"finish_reason":"stop"' in line]
        assert '"compacted":true' in final[0] and '"epoch":1' in final[0]


async def test_compaction_off_leaves_a_long_conversation_whole() -> None:
    async with running(model_context_windows={"scripted": WINDOW}) as app:
        for turn in range(12):
            r = await app.say(
                "off-long", f"t{turn} " + words(50, "w"), **{"X-Tether-Compaction": "off"}
            )
            assert tether_of(r)["compacted"] is False
        assert summariser_calls(app) == []
        info = await app.context("off-long")
        assert info["epoch"] == 0 and info["checkpoints"] == []
        assert info["tokens"] > info["compact_above_tokens"]  # it was over the threshold
        assert len(app.upstream.requests[-1]["messages"]) == 23  # the whole history went up


async def test_an_upstream_overflow_with_compaction_off_is_a_clear_error() -> None:
    async with running(FakeUpstream(context_window=300)) as app:
        await app.say("off-1", "short", **{"X-Tether-Compaction": "off"})
        r = await app.chat(
            [user(words(400, "z"))], {"X-Hermes-Session-Id": "off-1", "X-Tether-Compaction": "off"}
        )
        assert r.status_code == 400
        assert error_code(r) == "context_length_exceeded"
        assert "off-1" in r.json()["error"]["message"]
        assert (await app.context("off-1"))["messages_total"] == 2


async def test_an_upstream_overflow_compacts_and_retries_with_the_window_it_learned() -> None:
    async with running(FakeUpstream(context_window=1000)) as app:  # Tether thinks: 128k
        tethers = [
            tether_of(await app.say("overflow-1", f"o{turn} " + words(40, "o")))
            for turn in range(20)
        ]
        assert any(t["compacted"] for t in tethers)
        assert all(t["conversation_id"] == "overflow-1" for t in tethers)
        assert len(app.upstream.requests) > 20  # summariser calls and the retried turn
        info = await app.context("overflow-1")
        assert info["window"] == 1000  # learned from the upstream's error message
        assert info["epoch"] >= 1
        assert info["messages_total"] == 40  # every turn whole, none lost
