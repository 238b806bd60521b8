"""Models and request options end to end: `client.models.retrieve`, a model the upstream does
not serve, `n`, and an upstream 400's `param` (a real `tether serve`, the scripted upstream)."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer


def sdk(server: TetherServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)


def test_models_retrieve_answers_a_listed_model_and_404_otherwise(server: TetherServer) -> None:
    with sdk(server) as client:
        assert client.models.retrieve("scripted").id == "scripted"
        with pytest.raises(openai.NotFoundError) as exc:
            client.models.retrieve("nope/not-served")
    assert exc.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_a_model_the_upstream_does_not_serve_is_404_and_nothing_is_stored(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    before = server.counts()
    with sdk(server) as client, pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Hermes-Session-Id": "unknown-model"},
        )
    error = exc.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"  # type: ignore[index]
    assert "scripted" in error["message"]  # type: ignore[index]
    assert server.counts() == before
    assert upstream.chat_bodies() == []


def test_unknown_models_can_be_allowed(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> None:
    srv = TetherServer(
        tmp_path_factory.mktemp("allow") / "t.db", scripted.base_url, TETHER_UNKNOWN_MODELS="allow"
    ).start()
    try:
        with sdk(srv) as client:
            reply = client.chat.completions.create(
                model="any-name", messages=[{"role": "user", "content": "hi"}]
            )
        assert reply.choices[0].message.content == "echo: hi"
    finally:
        srv.stop()


def test_n_above_one_is_a_400_that_says_why(server: TetherServer) -> None:
    r = httpx2.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "scripted", "n": 2, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "n_not_supported" and error["param"] == "n"
    assert "one reply per turn" in error["message"]
    ok = httpx2.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "scripted", "n": 1, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert ok.status_code == 200


def test_an_upstream_400_keeps_its_param(server: TetherServer, upstream: ScriptedUpstream) -> None:
    upstream.queue(
        {
            "status": 400,
            "error": {
                "message": "temperature must be at most 2",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "invalid_value",
            },
        }
    )
    r = httpx2.post(
        f"{server.url}/v1/chat/completions",
        json={
            "model": "scripted",
            "temperature": 9,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "temperature" and error["code"] == "invalid_value"


def test_a_stream_without_upstream_usage_gets_tethers_estimate(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """llama.cpp's Python server ignores stream_options.include_usage: the turn's record still
    has usage (marked estimated), and a client that asked for a usage chunk gets one."""
    upstream.queue({"content": "a streamed answer", "no_usage": True})
    with sdk(server) as client:
        chunks = list(
            client.chat.completions.create(
                model="scripted",
                messages=[{"role": "user", "content": "stream without usage"}],
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"X-Hermes-Session-Id": "no-usage"},
            )
        )
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    turn_id = (final.model_extra or {})["tether"]["turn_id"]
    record = httpx2.get(f"{server.url}/v1/conversations/no-usage/turns/{turn_id}").json()
    assert record["usage"]["estimated"] is True
    assert record["usage"]["completion_tokens"] == usage.completion_tokens
