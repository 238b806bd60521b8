"""D6 rows not covered elsewhere: an upstream that answers 200 with garbage."""

from __future__ import annotations

from pathlib import Path

import httpx2

from tests.support import ScriptedUpstream, TetherServer

CHAT = "/v1/chat/completions"


def ask(server: TetherServer, stream: bool, cid: str) -> httpx2.Response:
    return httpx2.post(
        server.url + CHAT,
        json={"messages": [{"role": "user", "content": "hi"}], "stream": stream},
        headers={"X-Hermes-Session-Id": cid},
        timeout=30,
    )


def test_malformed_json_body_is_502_and_stores_nothing(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    assert ask(server, False, "garbage-1").status_code == 200  # an existing conversation
    before = server.counts()
    upstream.queue({"malformed": True})
    r = ask(server, False, "garbage-1")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_bad_response"
    after = server.counts()
    assert after["messages"] == before["messages"] and after["turns"] == before["turns"] + 1


def test_malformed_first_stream_chunk_is_a_plain_502(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    before = server.counts()
    upstream.queue({"malformed": True})
    r = ask(server, True, "garbage-2")
    assert r.status_code == 502  # nothing was streamed yet: an ordinary HTTP error
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "upstream_bad_response"
    assert server.counts() == before  # a new conversation: nothing at all is written


def test_one_deadline_per_turn(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    srv = TetherServer(tmp_path / "deadline.db", upstream.base_url, TETHER_MAX_TURN_SECONDS="1")
    srv.start()
    try:
        upstream.queue(
            {"delay": 3}
        )  # slower than the turn's deadline, well within the read timeout
        r = ask(srv, False, "deadline-1")
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "turn_deadline_exceeded"
        # mid-stream: the deadline ends the stream with an error event, nothing is stored
        upstream.queue({"content": "x" * 40, "chunk_size": 1, "chunk_delay": 0.1})
        r = ask(srv, True, "deadline-1")
        assert r.status_code == 200
        events = [line for line in r.text.splitlines() if line.startswith("data:")]
        assert "turn_deadline_exceeded" in events[-1] and "[DONE]" not in r.text
        assert srv.transcript("deadline-1") == []
    finally:
        srv.stop()
