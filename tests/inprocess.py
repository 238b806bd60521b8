"""The real app in-process, for tests/test_inprocess_*.py: `tether.api.app.create_app` over
`httpx.ASGITransport` (no socket, no process), its lifespan run here, with a `FakeUpstream` and
the in-memory store — the seams. Tests assert through HTTP and the fake's recorded requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tether.api.app import create_app
from tether.config import Settings
from tether.store import open_store
from tether.testing.fake import FakeUpstream

CHAT = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class App:
    http: httpx.AsyncClient
    upstream: FakeUpstream

    async def chat(
        self, messages: list[dict[str, Any]], headers: dict[str, str] | None = None, **body: Any
    ) -> httpx.Response:
        payload = {"model": "scripted", "messages": messages, **body}
        return await self.http.post(CHAT, json=payload, headers=headers or {})

    async def say(self, cid: str, text: str, **headers: str) -> httpx.Response:
        """A bridge's turn: one user message on conversation `cid`."""
        r = await self.chat([user(text)], {"X-Hermes-Session-Id": cid, **headers})
        assert r.status_code == 200, r.text
        return r

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = await self.http.get(path, params=params)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def transcript(self, cid: str) -> list[tuple[str, Any]]:
        """The stored transcript (GET …/messages), as (role, content) pairs."""
        r = await self.http.get(f"/v1/conversations/{cid}/messages")
        if r.status_code == 404:
            return []
        assert r.status_code == 200, r.text
        return [(m["role"], m["content"]) for m in r.json()["data"]]

    async def context(self, cid: str, view: bool = False) -> dict[str, Any]:
        return await self.get(f"/v1/conversations/{cid}/context", view=str(view))

    def sent(self, call: int = -1) -> list[tuple[str, Any]]:
        """What the upstream was sent in one call, as (role, content) pairs."""
        return pairs(self.upstream.requests[call]["messages"])


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def pairs(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["role"], m["content"]) for m in messages]


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def tether_of(r: httpx.Response) -> dict[str, Any]:
    """The `tether` object of a JSON chat response."""
    info: dict[str, Any] = r.json()["tether"]
    return info


def sse_data(r: httpx.Response) -> list[Any]:
    """The `data:` payloads of a streamed response, parsed (`[DONE]` kept as the string)."""
    out: list[Any] = []
    for line in r.text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def error_code(r: httpx.Response) -> str:
    code: str = r.json()["error"]["code"]
    return code


@asynccontextmanager
async def running(
    upstream: FakeUpstream | None = None, store_url: str = "memory://", **settings: Any
) -> AsyncIterator[App]:
    """The app with its lifespan (start-up sweeps, model discovery, drain at the end)."""
    fake = upstream if upstream is not None else FakeUpstream()
    config = Settings(
        database_url=store_url,
        default_model="scripted",
        upstream_retries=0,
        local_model="off",
        **settings,
    )
    app = create_app(config, store=open_store(store_url), upstream=fake)
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=30)
    async with app.router.lifespan_context(app), client as http:
        yield App(http, fake)
