"""D6 rows not covered elsewhere: an upstream that answers 200 with garbage."""

from __future__ import annotations

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
