"""Tests for the scripted fake upstream, run as a real subprocess on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from tether.compaction.tokens import count_messages, count_text

CONTEXT_WINDOW = 200


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "tether.testing.upstream", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--context-window", str(CONTEXT_WINDOW)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == f"scripted-upstream listening on http://127.0.0.1:{port}\n", line
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def http(upstream: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=upstream, timeout=10) as client:
        assert client.post("/_script/reset").json() == {"ok": True}
        yield client


@pytest.fixture
def sdk(upstream: str, http: httpx2.Client) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{upstream}/v1", api_key="x", max_retries=0)
    yield client
    client.close()


def _queue(http: httpx2.Client, items: Any) -> None:
    r = http.post("/_script/queue", json=items)
    assert r.status_code == 200
    assert r.json() == {"queued": len(items) if isinstance(items, list) else 1}


def test_default_echo_and_usage(sdk: openai.OpenAI) -> None:
    resp = sdk.chat.completions.create(
        model="m1",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}],
            },
        ],
    )
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "m1"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "echo: hello world"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == count_messages(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}],
            },
        ]
    )
    assert resp.usage.completion_tokens == count_text("echo: hello world")
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_recorded_request_matches_sent(http: httpx2.Client) -> None:
    body = {"model": "m2", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
    r = http.post("/v1/chat/completions", json=body, headers={"X-Trace": "abc"})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "echo: hi"
    recorded = http.get("/_script/requests").json()
    assert len(recorded) == 1
    assert recorded[0]["body"] == body
    assert recorded[0]["path"] == "/v1/chat/completions"
    assert recorded[0]["headers"]["x-trace"] == "abc"
    assert recorded[0]["headers"]["content-type"] == "application/json"


def test_streaming_reassembles_with_usage(http: httpx2.Client, sdk: openai.OpenAI) -> None:
    _queue(http, {"content": "The quick brown fox jumps", "chunk_size": 3})
    stream = sdk.chat.completions.create(
        model="m3",
        messages=[{"role": "user", "content": "go"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The quick brown fox jumps"
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 9  # ceil(25 / 3)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_text("The quick brown fox jumps")


def test_streaming_default_echo_without_usage(http: httpx2.Client) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "abc"}], "stream": True}
    r = http.post("/v1/chat/completions", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in r.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    payloads = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in payloads) == "echo: abc"
    assert all(p["choices"] for p in payloads)  # no usage chunk


def test_streamed_tool_call(http: httpx2.Client, sdk: openai.OpenAI) -> None:
    args = json.dumps({"city": "Paris", "units": "metric"})
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "weather", "arguments": args},
    }
    _queue(http, [{"tool_calls": [call]}])
    stream = sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "weather?"}], stream=True
    )
    ids, names, arguments, finish = [], [], "", None
    for chunk in stream:
        choice = chunk.choices[0]
        for tc in choice.delta.tool_calls or []:
            assert tc.index == 0
            if tc.id:
                ids.append(tc.id)
            if tc.function and tc.function.name:
                names.append(tc.function.name)
            if tc.function and tc.function.arguments:
                arguments += tc.function.arguments
        finish = choice.finish_reason or finish
    assert ids == ["call_abc"]
    assert names == ["weather"]
    assert arguments == args
    assert finish == "tool_calls"

    # Non-streaming tool call and the SDK's stream helper reassembly.
    _queue(http, [{"tool_calls": [call]}, {"tool_calls": [call]}])
    resp = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert resp.choices[0].message.tool_calls is not None
    assert resp.choices[0].message.tool_calls[0].function.arguments == args
    with sdk.chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as s:
        final = s.get_final_completion()
    tcs = final.choices[0].message.tool_calls
    assert tcs is not None and tcs[0].id == "call_abc"
    assert tcs[0].function.arguments == args


def test_scripted_error(http: httpx2.Client, sdk: openai.OpenAI) -> None:
    _queue(http, {"status": 500})
    with pytest.raises(openai.InternalServerError) as exc_info:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert exc_info.value.status_code == 500
    _queue(http, {"status": 429, "retry_after": "7", "error": {"message": "slow", "code": "rl"}})
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert r.json() == {"error": {"message": "slow", "code": "rl"}}


def test_context_window_overflow(http: httpx2.Client, sdk: openai.OpenAI) -> None:
    models = http.get("/v1/models").json()
    assert models["data"][0]["id"] == "scripted"
    assert models["data"][0]["context_window"] == CONTEXT_WINDOW
    with pytest.raises(openai.BadRequestError) as exc_info:
        sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": " ".join(f"w{i}" for i in range(200))}],
            max_tokens=10,
        )
    err = exc_info.value
    assert err.status_code == 400
    assert err.code == "context_length_exceeded"
    assert "maximum context length is 200 tokens" in err.message
    prompt = count_messages([{"role": "user", "content": " ".join(f"w{i}" for i in range(200))}])
    assert f"resulted in {prompt + 10} tokens" in err.message


def test_match_and_summariser(http: httpx2.Client, sdk: openai.OpenAI) -> None:
    _queue(http, [{"content": "for bananas", "match": "banana"}, {"content": "unmatched"}])
    r1 = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "banana?"}])
    assert r1.choices[0].message.content == "for bananas"
    summary_msgs: list[Any] = [
        {"role": "system", "content": "[[TETHER-SUMMARISER]] summarise"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    r2 = sdk.chat.completions.create(model="m", messages=summary_msgs)
    assert r2.choices[0].message.content == "unmatched"
    r3 = sdk.chat.completions.create(model="m", messages=summary_msgs)
    assert r3.choices[0].message.content == "SUMMARY of 3 messages"


def test_fail_after_chunks_cuts_stream(http: httpx2.Client, sdk: openai.OpenAI) -> None:
    _queue(http, {"content": "abcdefghijkl", "chunk_size": 2, "fail_after_chunks": 2})
    stream = sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    got = ""
    with pytest.raises(openai.APIError):
        for chunk in stream:
            got += chunk.choices[0].delta.content or ""
    assert got == "abcd"
    # Server is still healthy afterwards.
    resp = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "ok"}])
    assert resp.choices[0].message.content == "echo: ok"


def test_reset_clears(http: httpx2.Client) -> None:
    _queue(http, [{"content": "queued"}])
    http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    _queue(http, [{"content": "never used"}])
    assert len(http.get("/_script/requests").json()) == 1
    assert http.post("/_script/reset").json() == {"ok": True}
    assert http.get("/_script/requests").json() == []
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "y"}]})
    assert r.json()["choices"][0]["message"]["content"] == "echo: y"


# -- fault: a broken upstream ----------------------------------------------------------------------

LONG = "abcdefghijkl"


def _chat(stream: bool = True, text: str = "x") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], "stream": stream}


def _content(frames: list[str]) -> str:
    """The content of the well-formed chunk frames among `frames` (lines without 'data: ')."""
    out = ""
    for frame in frames:
        if frame == "[DONE]":
            continue
        chunk = json.loads(frame)
        out += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    return out


def _still_healthy(http: httpx2.Client) -> None:
    r = http.post("/v1/chat/completions", json=_chat(False, "ok"))
    assert r.json()["choices"][0]["message"]["content"] == "echo: ok"


def test_fault_reset_mid_stream_is_a_tcp_reset(http: httpx2.Client) -> None:
    _queue(
        http,
        {"content": LONG, "chunk_size": 2, "chunk_delay": 0.05, "fault": "reset",
         "fault_after_chunks": 2},
    )  # fmt: skip
    frames: list[str] = []
    # RST: "connection reset" (ReadError), not a FIN (RemoteProtocolError: incomplete body)
    with (
        pytest.raises(httpx2.ReadError) as exc_info,
        http.stream("POST", "/v1/chat/completions", json=_chat()) as r,
    ):
        assert r.status_code == 200
        frames.extend(ln[6:] for ln in r.iter_lines() if ln.startswith("data: "))
    assert "reset" in str(exc_info.value).lower() or "104" in str(exc_info.value)
    assert _content(frames) == "abcd"
    _still_healthy(http)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_fault_reset_at_the_start_sends_no_status_line(http: httpx2.Client, stream: bool) -> None:
    _queue(http, {"fault": "reset"})
    with pytest.raises(httpx2.ReadError):
        http.post("/v1/chat/completions", json=_chat(stream))
    assert len(http.get("/_script/requests").json()) == 1  # it was received, then reset
    _still_healthy(http)


def test_fault_truncate_ends_a_stream_cleanly_without_final_chunk_or_done(
    http: httpx2.Client,
) -> None:
    _queue(http, {"content": LONG, "chunk_size": 2, "fault": "truncate", "fault_after_chunks": 3})
    r = http.post("/v1/chat/completions", json=_chat())  # no exception: the body ended properly
    frames = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert "[DONE]" not in frames
    assert _content(frames) == "abcdef"
    assert all(c["finish_reason"] is None for f in frames for c in json.loads(f)["choices"])
    # at the start: the headers and nothing else
    _queue(http, {"fault": "truncate"})
    r = http.post("/v1/chat/completions", json=_chat())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.content == b""


def test_fault_truncate_cuts_a_json_body_short_of_its_length(http: httpx2.Client) -> None:
    _queue(http, {"content": "a complete answer", "fault": "truncate"})
    with pytest.raises(httpx2.RemoteProtocolError):
        http.post("/v1/chat/completions", json=_chat(False))
    _still_healthy(http)


def test_fault_malformed_mid_stream_then_the_rest(http: httpx2.Client) -> None:
    _queue(http, {"content": LONG, "chunk_size": 4, "fault": "malformed", "fault_after_chunks": 1})
    r = http.post("/v1/chat/completions", json=_chat())
    frames = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
    bad = [i for i, f in enumerate(frames) if f != "[DONE]" and not _is_json(f)]
    assert bad == [2]  # after the role chunk and one content chunk
    assert frames[-1] == "[DONE]"
    assert _content(frames[:2] + frames[3:]) == LONG


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_fault_junk_is_ten_mib_of_non_sse_bytes(http: httpx2.Client) -> None:
    _queue(http, {"fault": "junk"})
    r = http.post("/v1/chat/completions", json=_chat())
    assert r.status_code == 200
    assert len(r.content) == 10 * 1024 * 1024
    assert b"data:" not in r.content and b"\n" in r.content
    with pytest.raises(UnicodeDecodeError):
        r.content.decode()
    # mid-stream, a JSON reply, and a smaller size
    _queue(
        http,
        [{"content": LONG, "chunk_size": 4, "fault": "junk", "fault_after_chunks": 2,
          "junk_bytes": 1000},
         {"fault": "junk", "junk_bytes": 3000}],
    )  # fmt: skip
    r = http.post("/v1/chat/completions", json=_chat())
    head, _, junk = r.content.partition(b"\n\n" + bytes(range(256))[:10])
    assert len(junk) + 10 == 1000
    frames = [ln[6:] for ln in head.decode().split("\n\n") if ln.startswith("data: ")]
    assert _content(frames) == "abcdefgh" and "[DONE]" not in frames
    r = http.post("/v1/chat/completions", json=_chat(False))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert len(r.content) == 3000 and not _is_json(r.content.decode("latin-1"))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_fault_stall_sends_headers_then_goes_silent(http: httpx2.Client, stream: bool) -> None:
    _queue(http, {"content": "late", "fault": "stall", "stall": 0.6})
    started = time.monotonic()
    with http.stream("POST", "/v1/chat/completions", json=_chat(stream)) as r:
        headers_at = time.monotonic() - started
        body = r.read()
    done_at = time.monotonic() - started
    assert headers_at < 0.4 and done_at >= 0.6
    assert b"late" in body
    if stream:  # mid-stream: the gap is between two content chunks
        _queue(
            http,
            {"content": LONG, "chunk_size": 4, "fault": "stall", "stall": 0.6,
             "fault_after_chunks": 1},
        )  # fmt: skip
        arrivals: list[tuple[float, str]] = []
        started = time.monotonic()
        with http.stream("POST", "/v1/chat/completions", json=_chat()) as r:
            for ln in r.iter_lines():
                if ln.startswith("data: ") and ln != "data: [DONE]":
                    arrivals.append((time.monotonic() - started, _content([ln[6:]])))
        pieces = [p for _, p in arrivals if p]
        assert pieces == ["abcd", "efgh", "ijkl"]
        first, second = (t for t, p in arrivals if p in ("abcd", "efgh"))
        assert second - first >= 0.5  # the server sleeps 0.6 s; arrivals jitter


def test_unknown_fault_is_a_400(http: httpx2.Client) -> None:
    _queue(http, {"fault": "explode"})
    r = http.post("/v1/chat/completions", json=_chat(False))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_script"
