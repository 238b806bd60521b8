"""End to end against a real inference server nobody here wrote: `tether serve` with no upstream
starts llama.cpp with the bundled Gemma 3 270M (2048-token window) and uses it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.support import TetherServer
from tether.upstream import local

INSTALLED = local.status().installed
if os.environ.get("CI") and not INSTALLED:  # make test installs it: never skip silently in CI
    raise RuntimeError("tether[local] is not installed: `make test` installs it")

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(not INSTALLED, reason="tether[local] not installed (make test installs it)"),
]

PARAGRAPH = (
    "The harbour town kept its lighthouse long after ships stopped needing it. Every evening "
    "the keeper climbed the spiral stairs, polished the lens, and wrote the weather in a "
    "ledger that nobody read. Fishermen said the light brought luck; the council said it "
    "cost too much; the keeper said nothing and kept climbing. "
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TetherServer]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    s = TetherServer(tmp_path_factory.mktemp("local") / "tether.db", None)
    s.env = {**env, **{k: v for k, v in s.env.items() if k.startswith("TETHER_")}}
    s.env.pop("TETHER_DEFAULT_MODEL", None)
    s.env["TETHER_UPSTREAM_RETRIES"] = "1"
    s.env["TETHER_LOCAL_MODEL"] = "auto"
    s.start(timeout=180)
    yield s
    s.stop()


def sdk(srv: TetherServer, cid: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{srv.url}/v1",
        api_key="none",
        max_retries=0,
        timeout=120,
        default_headers={"X-Hermes-Session-Id": cid, **headers},
    )


def context(srv: TetherServer, cid: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx2.get(f"{srv.url}/v1/conversations/{cid}/context").json()
    return data


def test_banner_and_models_name_the_local_model(srv: TetherServer) -> None:
    assert "bundled local model" in srv.output()
    models = httpx2.get(f"{srv.url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == [local.MODEL_ALIAS]


def test_multi_turn_continuity_with_real_usage(srv: TetherServer) -> None:
    client = sdk(srv, "local-bridge-1")
    prompts, texts = [], []
    for text in ("Name a colour.", "Name a fruit of that colour.", "Now a vegetable."):
        raw = client.chat.completions.with_raw_response.create(
            model=local.MODEL_ALIAS, messages=[{"role": "user", "content": text}], max_tokens=16
        )
        assert raw.headers["x-hermes-session-id"] == "local-bridge-1"
        reply = raw.parse()
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
        prompts.append(reply.usage.prompt_tokens)
        texts.append(reply.choices[0].message.content or "")
    assert "".join(texts).strip()  # real model text (a base model: rough, sometimes empty)
    assert prompts[0] < prompts[1] < prompts[2]  # the model saw the whole history each turn
    info = context(srv, "local-bridge-1")
    assert info["window"] == 2048 and info["messages_total"] == 6
    assert info["last_reported_prompt_tokens"] == prompts[-1]


def test_streaming_through_the_sdk(srv: TetherServer) -> None:
    client = sdk(srv, "local-stream-1")
    text, final = [], None
    for chunk in client.chat.completions.create(
        model=local.MODEL_ALIAS,
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=16,
        stream=True,
    ):
        delta = chunk.choices[0].delta
        text.append(delta.content or "")
        if chunk.choices[0].finish_reason:
            final = (chunk.model_extra or {}).get("tether")
    assert "".join(text).strip()
    assert final is not None and final["conversation_id"] == "local-stream-1"


def test_long_conversation_outgrows_the_real_window_and_goes_on(srv: TetherServer) -> None:
    client = sdk(srv, "local-long-1")
    total_sent = 0
    for turn in range(14):
        text = f"Part {turn}. " + PARAGRAPH * 3 + "Summarise this part in one line."
        reply = client.chat.completions.create(
            model=local.MODEL_ALIAS, messages=[{"role": "user", "content": text}], max_tokens=24
        )
        assert reply.usage is not None
        assert reply.usage.prompt_tokens + 24 <= 2048  # every call fit the real window
        total_sent += len(text)
    info = context(srv, "local-long-1")
    assert info["messages_total"] == 28
    assert info["epoch"] >= 1  # compaction carried it
    assert total_sent // 4 > 2048  # the transcript is far bigger than the window


def test_real_overflow_is_mapped_when_compaction_is_off(srv: TetherServer, tmp_path: Path) -> None:
    client = sdk(srv, "local-off-1", **{"X-Tether-Compaction": "off"})
    client.chat.completions.create(
        model=local.MODEL_ALIAS, messages=[{"role": "user", "content": "Hi."}], max_tokens=8
    )
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=local.MODEL_ALIAS,
            messages=[{"role": "user", "content": PARAGRAPH * 40}],
            max_tokens=8,
        )
    assert err.value.code == "context_length_exceeded"
    assert "local-off-1" in err.value.message
    assert context(srv, "local-off-1")["messages_total"] == 2
