"""FakeUpstream answers a script as the scripted upstream process does (the same items, the
same replies and chunks), and fails as HttpUpstream fails on the same HTTP answers. The process's
app runs here over ASGI: no socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from tether.errors import TetherError
from tether.testing import upstream as scripted
from tether.testing.fake import FakeUpstream
from tether.upstream.base import context_windows

pytestmark = pytest.mark.asyncio(loop_scope="session")

CALL = {"id": "call_7", "type": "function", "function": {"name": "f", "arguments": '{"a": [1]}'}}
ITEMS: list[dict[str, Any]] = [
    {},
    {"content": "abcdefghij", "chunk_size": 3},
    {"tool_calls": [CALL]},
    {"content": "hi", "finish_reason": "length", "usage": {"prompt_tokens": 5}},
    {"content": "x", "message_extra": {"annotations": []}},
    {"no_usage": True},
]
HISTORY = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there"},
]


@asynccontextmanager
async def process_app(window: int | None = None) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=scripted.create_app(window))
    async with httpx.AsyncClient(transport=transport, base_url="http://up") as http:
        yield http


def same_shape(data: Any) -> Any:
    """The answer without what differs by design between two servers: ids and clocks."""
    if isinstance(data, dict):
        return {k: same_shape(v) for k, v in data.items() if k not in ("id", "created")}
    if isinstance(data, list):
        return [same_shape(v) for v in data]
    return data


@pytest.mark.parametrize("item", ITEMS, ids=range(len(ITEMS)))
async def test_a_reply_is_the_scripted_processs_reply(item: dict[str, Any]) -> None:
    body = {"model": "m", "messages": HISTORY}
    fake = FakeUpstream(dict(item))
    async with process_app() as http:
        await http.post("/_script/queue", json=item)
        expected = (await http.post("/v1/chat/completions", json=body)).json()
    got = await fake.complete(body)
    assert same_shape(got) == same_shape(expected)
    assert got["choices"][0]["message"]["content"] is not None or item.get("tool_calls")
    assert fake.requests == [body]


@pytest.mark.parametrize("item", ITEMS, ids=range(len(ITEMS)))
async def test_a_stream_is_the_scripted_processs_stream(item: dict[str, Any]) -> None:
    body = {"messages": HISTORY, "stream": True, "stream_options": {"include_usage": True}}
    fake = FakeUpstream(dict(item))
    async with process_app() as http:
        await http.post("/_script/queue", json=item)
        text = (await http.post("/v1/chat/completions", json=body)).text
    frames = [line[len("data: ") :] for line in text.split("\n\n") if line]
    assert frames[-1] == "[DONE]"
    expected = [orjson.loads(f) for f in frames[:-1]]
    chunks = [chunk async for chunk in fake.stream(body)]
    assert [same_shape(c.data) for c in chunks] == [same_shape(e) for e in expected]
    assert all(orjson.loads(c.raw) == c.data for c in chunks)
    assert ("usage" in chunks[-1].data) is not bool(item.get("no_usage"))


async def test_the_summariser_gets_a_summary_by_default() -> None:
    fake = FakeUpstream()
    body = {"messages": [{"role": "system", "content": "[[TETHER-SUMMARISER]] fold"}, *HISTORY]}
    reply = await fake.complete(body)
    # the system messages aside: the summariser's marker one and the history's own
    assert reply["choices"][0]["message"]["content"] == "SUMMARY of 1 messages"


async def test_errors_are_what_http_upstream_raises_for_the_same_answer() -> None:
    too_long = {"message": "too long", "code": "context_length_exceeded"}
    fake = FakeUpstream(
        {"status": 400, "error": too_long},
        {"status": 429, "retry_after": 7},
        {"status": 401},
        {"status": 500},
    )
    body = {"messages": HISTORY}
    expected = [
        (400, "context_length_exceeded", None),
        (429, "upstream_rate_limited", {"Retry-After": "7"}),
        (502, "upstream_auth_failed", None),
        (502, "upstream_error", None),
    ]
    for status, code, headers in expected:
        with pytest.raises(TetherError) as caught:
            await fake.complete(body)
        assert (caught.value.status, caught.value.code) == (status, code)
        if headers is not None:
            assert caught.value.headers == headers
    assert len(fake.requests) == 4


async def test_a_context_window_refuses_a_longer_prompt_and_is_listed() -> None:
    fake = FakeUpstream(context_window=50)
    await fake.complete({"messages": HISTORY})
    with pytest.raises(TetherError) as caught:
        await fake.complete({"messages": [{"role": "user", "content": "word " * 100}]})
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length is 50 tokens" in str(caught.value)
    assert context_windows(await fake.models()) == {"scripted": 50}
    assert context_windows(await FakeUpstream().models()) == {}


async def test_a_stream_broken_mid_answer_raises_after_the_chunks_sent() -> None:
    fake = FakeUpstream({"content": "abcdefgh", "chunk_size": 2, "fail_after_chunks": 2})
    got: list[dict[str, Any]] = []
    with pytest.raises(TetherError) as caught:
        async for chunk in fake.stream({"messages": HISTORY, "stream": True}):
            got.append(chunk.data)
    assert caught.value.code == "upstream_stream_interrupted"
    deltas = [c["choices"][0]["delta"] for c in got]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "ab"}, {"content": "cd"}]


async def test_explicit_chunks_are_streamed_as_they_are() -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"content": "hi"}}]}, {"choices": []}]
    fake = FakeUpstream({"chunks": chunks})
    assert [c.data async for c in fake.stream({"messages": HISTORY})] == chunks


async def test_socket_faults_need_the_process() -> None:
    with pytest.raises(ValueError, match="scripted upstream process"):
        FakeUpstream({"fault": "reset"})
    fake = FakeUpstream()
    with pytest.raises(ValueError, match="scripted upstream process"):
        fake.script({"content": "x"}, {"fault": "stall", "stall": 1})
    assert fake.queue == []
