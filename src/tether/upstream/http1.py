"""A lean HTTP/1.1 client for the upstream: pooled keep-alive connections on asyncio protocols,
responses parsed by httptools (which also undoes chunked transfer encoding).

Tether sends one kind of request to one base URL, so the client does that and nothing more: no
redirects, no cookies, no compression (it asks for `identity`), no proxies. On the hot path it
costs 0.13-0.15 ms of CPU per 201-message request where aiohttp's ClientSession costs 0.29-0.49
(bench/README.md, issue 14)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools


class ClientError(Exception):
    """The connection failed or broke, or the reply was not HTTP."""


class Disconnected(ClientError):
    """A connection that had served a request closed cleanly before the next reply's head: most
    likely the upstream had just closed it as idle. (A reset, or a new connection closing, is a
    plain ClientError.)"""


class ConnectTimeout(ClientError):
    """No connection within the connect timeout."""


class Reply:
    """One response: its status and headers once the head is in; its body as it arrives."""

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self.complete = False
        self.discard = False  # released: later body bytes are dropped
        self.error: BaseException | None = None
        self._pieces: list[bytes] = []
        self._head: asyncio.Future[None] = conn.loop.create_future()
        self._wake: asyncio.Future[None] | None = None

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.complete or self.error is not None:
            return
        self.error = exc
        if not self._head.done():
            self._head.set_exception(exc)
        self._notify()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive; raises what broke the connection, or TimeoutError
        after the read timeout without a byte."""
        while True:
            if self._pieces:
                pieces, self._pieces = self._pieces, []
                for piece in pieces:
                    yield piece
                continue
            if self.error is not None:
                raise self.error
            if self.complete:
                return
            self._wake = self.conn.loop.create_future()
            await self._wake
            self._wake = None

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.chunks()])

    def release(self) -> None:
        """Back to the pool once read to its end on a reusable connection. A stream released
        at its `[DONE]` often has its last bytes (the chunked body's end) still on the way: the
        connection waits in the pool, reused only if they arrived."""
        if self.error is None and self.conn.transport is not None:
            self._pieces = []
            self.discard = True
            self.conn.idle()
        else:
            self.close()

    def close(self) -> None:
        self.conn.close()


class _Conn(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.reply: Reply | None = None
        self.keep = False
        self.served = 0  # replies read to their end on this connection
        self.last = 0.0  # monotonic time of the last byte in, or of going idle
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.reply is None or self.reply.complete:  # bytes nobody asked for
            self.close()
            return
        self.last = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(ClientError(f"the upstream sent invalid HTTP ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        reply = self.reply
        if reply is None or reply.complete:
            return
        if not reply.status and exc is None and self.served:
            reply._fail(Disconnected("the upstream closed the connection before answering"))
        elif not reply.status:
            reason = f": {exc!r}" if exc is not None else ""
            reply._fail(ClientError(f"the connection broke before the upstream answered{reason}"))
        elif "content-length" not in reply.headers and "transfer-encoding" not in reply.headers:
            self._ended()  # a body delimited by the connection's end
        else:
            reply._fail(ClientError("the upstream closed the connection mid-reply"))
        self._stop_timer()

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.reply is not None
        self.reply.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        reply = self.reply
        assert reply is not None
        reply.status = self.parser.get_status_code()
        self.keep = self.parser.should_keep_alive()
        reply._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self.reply is not None
        if not self.reply.discard:
            self.reply._pieces.append(body)
            self.reply._notify()

    def on_message_complete(self) -> None:
        self._ended()

    # -- ours
    def _ended(self) -> None:
        self._stop_timer()
        self.served += 1
        if self.reply is not None:
            self.reply.complete = True
            self.reply._notify()

    def _broken(self, exc: BaseException) -> None:
        if self.reply is not None:
            self.reply._fail(exc)
        self.close()

    def send(self, head: bytes, body: bytes, read_timeout: float) -> Reply:
        assert self.transport is not None
        self.reply = Reply(self)
        self.keep = False
        self.last = time.monotonic()
        self.transport.writelines((head, body))
        self._timer = self.loop.call_later(read_timeout, self._check, read_timeout)
        return self.reply

    def _check(self, timeout: float) -> None:
        """The read timeout: one timer per request, re-armed for what is left of the timeout
        after the last byte, instead of rescheduled on every read."""
        left = self.last + timeout - time.monotonic()
        if left > 0:
            self._timer = self.loop.call_later(left, self._check, timeout)
            return
        self._timer = None
        self._broken(TimeoutError(f"no byte from the upstream in {timeout:g} s"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def idle(self) -> None:
        self.last = time.monotonic()
        self.pool.put(self)

    def reusable(self, now: float) -> bool:
        reply = self.reply
        return (
            self.transport is not None
            and reply is not None
            and reply.complete
            and self.keep
            and now - self.last < self.pool.keepalive
        )

    def close(self) -> None:
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class Pool:
    """Keep-alive connections to one origin, most recently used first; a connection idle longer
    than `keepalive` is closed rather than reused (before the upstream closes it under us).
    `headers` go with every request."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        connect_timeout: float,
        read_timeout: float,
        keepalive: float = 4.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc.rpartition("@")[2]
        self.prefix = parts.path.rstrip("/")
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._heads: dict[tuple[str, str], str] = {}  # (method, path) → the head before its length
        self._idle: list[_Conn] = []

    def put(self, conn: _Conn) -> None:
        self._idle.append(conn)

    async def _connection(self) -> _Conn:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable(now):
                return conn
            conn.close()
        try:
            _, conn = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    lambda: _Conn(self), self.host, self.port, ssl=self.ssl
                ),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection within {self.connect_timeout:g} s") from exc
        except OSError as exc:
            raise ClientError(f"cannot connect: {exc}") from exc
        return conn

    def _request_head(self, method: str, path: str, length: int) -> bytes:
        head = self._heads.get((method, path))
        if head is None:
            head = self._heads[(method, path)] = (
                f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.netloc}\r\n"
                f"{self._fixed}Accept-Encoding: identity\r\nContent-Length: "
            )
        return f"{head}{length}\r\n\r\n".encode("latin-1")

    async def request(self, method: str, path: str, body: bytes = b"") -> Reply:
        """Send the request; returns once the reply's head is in."""
        conn = await self._connection()
        reply = conn.send(self._request_head(method, path, len(body)), body, self.read_timeout)
        try:
            await reply._head
        except BaseException:
            conn.close()
            raise
        return reply

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
