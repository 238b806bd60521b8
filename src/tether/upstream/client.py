"""The OpenAI-compatible LLM client: one pooled httpx2 connection pool, retries before the first
token only, upstream failures mapped to `TetherError`s a client can act on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2
import orjson
import structlog

from tether.errors import TetherError

log = structlog.get_logger("tether.upstream")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed event: the raw JSON bytes as received and the parsed object."""

    raw: bytes
    data: dict[str, Any]


class Upstream(Protocol):
    """What the engine needs from a model server. Tests swap the implementation, never patch."""

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]: ...
    async def models(self) -> dict[str, Any]: ...
    async def aclose(self) -> None: ...


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def map_status_error(status: int, body: bytes, retry_after: float | None) -> TetherError:
    """Turn an upstream HTTP error into the error our client sees."""
    message = body[:500].decode("utf-8", "replace")
    code: str | None = None
    try:
        err = orjson.loads(body).get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code = err.get("code") if isinstance(err.get("code"), str) else None
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    if code == "context_length_exceeded" or "maximum context length" in message:
        return TetherError(400, "context_length_exceeded", f"upstream: {message}", param="messages")
    if status == 429:
        headers = {"Retry-After": str(int(retry_after or 1))}
        return TetherError(
            429, "upstream_rate_limited", f"upstream rate limit: {message}", headers=headers
        )
    if status in (400, 404, 422):
        return TetherError(status, code or "upstream_invalid_request", f"upstream: {message}")
    if status in (401, 403):
        return TetherError(
            502,
            "upstream_auth_failed",
            f"the upstream rejected Tether's credentials ({status}): check TETHER_UPSTREAM_API_KEY",
        )
    return TetherError(502, "upstream_error", f"upstream answered {status}: {message}")


class HttpUpstream:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._client = httpx2.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx2.Timeout(timeout, connect=connect_timeout),
            # the pool is scanned on every request: keep it about as large as the concurrency
            limits=httpx2.Limits(max_connections=128, max_keepalive_connections=32),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _delay(self, attempt: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else self.backoff * (2**attempt)
        await asyncio.sleep(min(delay, 30.0))

    async def _send(self, body: dict[str, Any], stream: bool) -> httpx2.Response:
        """POST with retries on connect errors, 429 and 5xx. Returns a 200 response (streamed
        responses still open)."""
        content = orjson.dumps(body)
        headers = {"Content-Type": "application/json"}
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                request = self._client.build_request(
                    "POST", "/chat/completions", content=content, headers=headers
                )
                response = await self._client.send(request, stream=stream)
            except httpx2.TimeoutException as exc:
                if last or isinstance(exc, httpx2.ReadTimeout):
                    raise TetherError(
                        504, "upstream_timeout", f"the upstream did not answer in time ({exc!r})"
                    ) from exc
                log.warning("upstream.retry", attempt=attempt + 1, reason=repr(exc))
                await self._delay(attempt, None)
                continue
            except httpx2.TransportError as exc:
                if last:
                    raise TetherError(
                        502,
                        "upstream_unreachable",
                        f"cannot reach the upstream at {self.base_url}: {exc!r}",
                    ) from exc
                log.warning("upstream.retry", attempt=attempt + 1, reason=repr(exc))
                await self._delay(attempt, None)
                continue
            if response.status_code == 200:
                return response
            data = await response.aread()
            await response.aclose()
            retry_after = _retry_after(response)
            if response.status_code in RETRY_STATUSES and not last:
                log.warning("upstream.retry", attempt=attempt + 1, status=response.status_code)
                await self._delay(attempt, retry_after)
                continue
            raise map_status_error(response.status_code, data, retry_after)
        raise AssertionError("unreachable")

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._send(body, stream=False)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise TetherError(
                502, "upstream_bad_response", "the upstream sent invalid JSON"
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise TetherError(502, "upstream_bad_response", "the upstream sent no choices")
        return data

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        response = await self._send(body, stream=True)
        done = False
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                raw = payload.encode()
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise TetherError(
                        502, "upstream_bad_response", "the upstream sent a malformed stream chunk"
                    ) from exc
                if not isinstance(data, dict):
                    raise TetherError(502, "upstream_bad_response", "stream chunk is not an object")
                if "error" in data:
                    err = data["error"]
                    msg = err.get("message") if isinstance(err, dict) else str(err)
                    raise TetherError(502, "upstream_error", f"upstream stream error: {msg}")
                yield Chunk(raw, data)
        except httpx2.TimeoutException as exc:
            raise TetherError(504, "upstream_timeout", "the upstream stream stalled") from exc
        except httpx2.TransportError as exc:
            raise TetherError(
                502, "upstream_stream_interrupted", f"the upstream stream broke: {exc!r}"
            ) from exc
        finally:
            await response.aclose()
        if not done:
            raise TetherError(
                502, "upstream_stream_interrupted", "the upstream stream ended without [DONE]"
            )

    async def models(self) -> dict[str, Any]:
        try:
            response = await self._client.get("/models")
        except httpx2.TransportError as exc:
            raise TetherError(
                502, "upstream_unreachable", f"cannot reach the upstream at {self.base_url}"
            ) from exc
        if response.status_code != 200:
            raise map_status_error(response.status_code, response.content, None)
        data = orjson.loads(response.content)
        if not isinstance(data, dict):
            raise TetherError(502, "upstream_bad_response", "the upstream sent no model list")
        return data


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
