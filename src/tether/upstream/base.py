"""What the engine needs from a model server, apart from any transport: the `Upstream`
protocol, the streamed `Chunk`, and the context windows a model list reports.

`HttpUpstream` (`tether.upstream.client`, over `upstream/http1.py`) is the implementation Tether
serves with; `tether.testing.fake.FakeUpstream` is the one in-process tests swap in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed event: the raw JSON bytes as received and the parsed object."""

    raw: bytes
    data: dict[str, Any]


class Upstream(Protocol):
    """What the engine needs from a model server. Tests swap the implementation, never patch.

    `complete` answers a Chat Completions body with the reply object; `stream` yields the
    chunks of a streamed reply (after the last one the stream is whole: `[DONE]` was seen);
    `models` answers the `/models` list. Failures raise `TetherError`s a client can act on."""

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]: ...
    async def models(self) -> dict[str, Any]: ...
    async def aclose(self) -> None: ...


_WINDOW_KEYS = ("context_window", "context_length", "max_model_len", "max_context_length", "n_ctx")


def context_windows(models: dict[str, Any]) -> dict[str, int]:
    """Context windows a `/v1/models` answer reports (vLLM, OpenRouter, LM Studio style keys)."""
    out: dict[str, int] = {}
    for model in models.get("data") or ():
        if not isinstance(model, dict) or not isinstance(model.get("id"), str):
            continue
        for key in _WINDOW_KEYS:
            value = model.get(key) or (model.get("meta") or {}).get(key)
            if isinstance(value, int) and value > 0:
                out[model["id"]] = value
                break
    return out
