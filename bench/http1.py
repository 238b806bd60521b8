"""A lean HTTP/1.1 keep-alive client for the load generator: asyncio protocols + httptools.

httpx2 spent 1.4–3 ms of CPU per request in the load generator on the 2-core machine, more than
the upstream and a third of Tether, on the same cores: the harness was measuring itself. This
client does what the benchmark needs and nothing else: POST a pre-built body (or a GET) on a
pooled keep-alive connection, time the first body byte and the last, keep the body. No redirects,
no TLS, no cookies, no decompression; a response without Content-Length or chunked framing is read
to the connection's close.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    first_byte: float  # perf_counter() at the first body byte (at the headers if no body)
    done: float  # perf_counter() at the last byte


class HTTPError(Exception):
    """The connection failed or closed before the response was complete."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None  # an asyncio or uvloop transport
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.chunks: list[bytes] = []
        self.first = 0.0
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HTTPError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HTTPError(f"connection closed: {exc!r}"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.first = time.perf_counter()

    def on_body(self, body: bytes) -> None:
        if not self.chunks:
            self.first = time.perf_counter()
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            status = self.parser.get_status_code()
            body = b"".join(self.chunks)
            waiter.set_result(Response(status, body, self.first, time.perf_counter()))
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()
            self.closed = True

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self.waiter is None
        self.chunks = []
        self.first = 0.0
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


class Client:
    """Keep-alive connections per (host, port), one request in flight on each."""

    def __init__(self, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    @staticmethod
    def request(
        url: str, body: bytes, headers: dict[str, str], method: str = "POST"
    ) -> tuple[tuple[str, int], bytes]:
        """((host, port), the request's bytes): built once, before the clock starts. A GET
        without a body is sent without Content-Length."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
        if body or method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return (host, port), ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, address: tuple[str, int], data: bytes) -> Response:
        idle = self._idle.setdefault(address, [])
        conn = idle.pop() if idle else None
        if conn is None or conn.closed:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(_Conn, *address)
        try:
            response = await asyncio.wait_for(conn.send(data), self.timeout)
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
        if not conn.closed:
            idle.append(conn)
        return response

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        address, data = self.request(url, body, headers)
        return await self.send(address, data)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
