"""The OpenAI-compatible LLM client: one pool of keep-alive connections (`upstream/http1.py`),
retries before the first token only, upstream failures mapped to `TetherError`s a client can act
on.

Our own HTTP/1.1 client rather than aiohttp's (which replaced httpx2's): on the hot path it costs
0.13-0.15 ms of CPU per 201-message call against aiohttp's 0.29-0.49 ms and httpx2's 1.30 ms
(bench/README.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import structlog

from tether import metrics
from tether.errors import TetherError
from tether.upstream.base import Chunk
from tether.upstream.errors import map_status_error
from tether.upstream.http1 import ClientError, ConnectTimeout, Disconnected, Pool, Reply

log = structlog.get_logger("tether.upstream")

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_LINE_BYTES = 16 * 1024 * 1024  # one streamed event; more is not an OpenAI stream


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@contextmanager
def _measured(kind: str) -> Iterator[None]:
    """An upstream call's time (tether_upstream_seconds) and, if it fails, its error code."""
    started = time.perf_counter()
    try:
        yield
    except TetherError as exc:
        metrics.UPSTREAM_ERRORS.labels(exc.code).inc()
        raise
    finally:
        metrics.UPSTREAM_SECONDS.labels(kind).observe(time.perf_counter() - started)


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
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._pool = Pool(
            self.base_url,
            headers=headers,
            connect_timeout=connect_timeout,
            # no byte for this long; the turn's own deadline bounds the whole call
            read_timeout=timeout,
            # idle connections closed after 4 s: before upstreams that serve with uvicorn
            # (vLLM, llama.cpp's server: 5 s) close them, which would race a new request
            keepalive=4.0,
        )

    async def aclose(self) -> None:
        self._pool.close()

    async def _delay(self, attempt: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else self.backoff * (2**attempt)
        await asyncio.sleep(min(delay, 30.0))

    async def _post(self, content: bytes) -> Reply:
        return await self._pool.request("POST", "/chat/completions", content)

    async def _send(self, body: dict[str, Any], stream: bool) -> tuple[Reply, bytes]:
        """POST with retries on connect errors, 429 and 5xx. Returns a 200 response and, unless
        streaming, its whole body (a body cut short counts as a connection error)."""
        content = orjson.dumps(body)
        stale_retried = False
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                try:
                    response = await self._post(content)
                except Disconnected:
                    # closed without a word: most likely a pooled connection the upstream had
                    # just closed as idle. Once, at once, on a new connection (not a retry).
                    if stale_retried:
                        raise
                    stale_retried = True
                    log.info("upstream.stale_connection")
                    response = await self._post(content)
                if response.status == 200 and stream:
                    return response, b""
                try:
                    data = await response.read()
                finally:
                    response.release()
            except ConnectTimeout as exc:
                if last:
                    raise TetherError(
                        504, "upstream_timeout", f"cannot connect to the upstream ({exc!r})"
                    ) from exc
                log.warning("upstream.retry", attempt=attempt + 1, reason=repr(exc))
                await self._delay(attempt, None)
                continue
            except TimeoutError as exc:  # a read timeout: the upstream may be working on it
                raise TetherError(
                    504, "upstream_timeout", f"the upstream did not answer in time ({exc!r})"
                ) from exc
            except ClientError as exc:
                if last:
                    raise TetherError(
                        502,
                        "upstream_unreachable",
                        f"cannot reach the upstream at {self.base_url}: {exc!r}",
                    ) from exc
                log.warning("upstream.retry", attempt=attempt + 1, reason=repr(exc))
                await self._delay(attempt, None)
                continue
            if response.status == 200:
                return response, data
            retry_after = _retry_after(response.headers)
            if response.status in RETRY_STATUSES and not last:
                log.warning("upstream.retry", attempt=attempt + 1, status=response.status)
                await self._delay(attempt, retry_after)
                continue
            raise map_status_error(response.status, data, retry_after)
        raise AssertionError("unreachable")

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        with _measured("complete"):
            return await self._complete(body)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        with _measured("stream"):
            async for chunk in self._stream(body):
                yield chunk

    async def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        _, content = await self._send(body, stream=False)
        data = _json_object(content, "the upstream sent invalid JSON")
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise _bad("the upstream sent no choices")
        return data

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        response, _ = await self._send(body, stream=True)
        done = False
        try:
            async for line in _lines(response):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                yield Chunk(payload, _event(payload))
        except TimeoutError as exc:
            raise TetherError(504, "upstream_timeout", "the upstream stream stalled") from exc
        except ClientError as exc:
            raise TetherError(
                502, "upstream_stream_interrupted", f"the upstream stream broke: {exc!r}"
            ) from exc
        finally:
            if done:
                response.release()
            else:
                response.close()  # never hand a half-read connection back to the pool
        if not done:
            raise TetherError(
                502, "upstream_stream_interrupted", "the upstream stream ended without [DONE]"
            )

    async def models(self) -> dict[str, Any]:
        try:
            response = await self._pool.request("GET", "/models")
            try:
                content = await response.read()
            finally:
                response.release()
            status = response.status
        except (ClientError, TimeoutError) as exc:
            raise TetherError(
                502, "upstream_unreachable", f"cannot reach the upstream at {self.base_url}"
            ) from exc
        if status != 200:
            raise map_status_error(status, content, None)
        data = _json_object(content, "the upstream sent no model list")
        if not isinstance(data, dict):
            raise _bad("the upstream sent no model list")
        return data


async def _lines(response: Reply) -> AsyncIterator[bytes]:
    """The body's lines (without line endings), as they arrive."""
    buffer = b""
    async for piece in response.chunks():
        buffer += piece
        if b"\n" not in piece:
            if len(buffer) > MAX_LINE_BYTES:
                raise _bad("the upstream sent an oversized stream line")
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if buffer:
        yield buffer.rstrip(b"\r")


def _bad(message: str) -> TetherError:
    return TetherError(502, "upstream_bad_response", message)


def _json_object(payload: bytes, invalid: str) -> Any:
    """The payload parsed, or 502 `upstream_bad_response` saying `invalid`."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise _bad(invalid) from exc


def _event(payload: bytes) -> dict[str, Any]:
    data = _json_object(payload, "the upstream sent a malformed stream chunk")
    if not isinstance(data, dict):
        raise _bad("stream chunk is not an object")
    if "error" in data:
        err = data["error"]
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise TetherError(502, "upstream_error", f"upstream stream error: {msg}")
    return data
