"""The HTTP front, bounded: uvicorn's httptools protocol with the limits it lacks.

httptools (llhttp) bounds nothing: a header that never ends grew the server by a gigabyte in
seconds (4 connections, 99% CPU, `/health` unanswered), a complete 10 MB header or 100,000
headers were accepted, and a connection that never sent a byte was kept forever (20,000 of them
exhausted the file descriptors). uvicorn's h11 protocol bounds the head (16 KiB) but costs
throughput; this subclass keeps httptools and adds:

- **head limits**: at most `max_header_bytes` of request line and headers, `max_headers`
  headers: `431` with the error envelope, then the connection is closed. A head still
  incomplete is counted chunk by chunk as it arrives, so it never grows past the limit and
  one read (at most 256 KiB);
- **a read timeout**: a connection must send a whole request (head and body) within
  `read_timeout` seconds of connecting (or of its first byte, for the next request on a
  kept-alive one), else it is closed (`408` if it had sent something). Idle kept-alive
  connections are closed by uvicorn's `timeout_keep_alive`;
- **a connection cap**: past `max_connections`, the connection waiting longest without a whole
  request received (idle, or still sending its head or body) is closed to make room; if every
  connection has a request being answered, the new one gets `503 too_many_connections`;
- **parser rejections in the envelope**: `400 invalid_http_request` as JSON, not text/plain.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from tether.errors import TetherError


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    max_headers: int
    read_timeout: float
    max_connections: int


class _HeadTooLarge(Exception):
    pass


def raw_response(error: TetherError) -> bytes:
    """A complete HTTP/1.1 response carrying the error envelope, closing the connection."""
    body = orjson.dumps(error.body())
    head = [
        STATUS_LINE[error.status],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
        *(f"{k}: {v}\r\n".encode("latin-1") for k, v in error.headers.items()),
        b"\r\n",
    ]
    return b"".join(head) + body


class BoundedProtocol(HttpToolsProtocol):
    """One connection. `limits` and `waiting` are set on the subclass `protocol_class` makes."""

    limits: ClassVar[Limits]
    # connections without a whole request received, the longest waiting first (eviction)
    waiting: ClassVar[OrderedDict[BoundedProtocol, None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0  # of chunks that ended inside the head
        self._head_size = 0  # of the URL and headers parsed so far
        self._header_count = 0
        self._sent_any = False
        self._read_timer: asyncio.TimerHandle | None = None

    # -- connection lifecycle ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._reject(
                TetherError(
                    503,
                    "too_many_connections",
                    f"the server has {self.limits.max_connections} connections open, each with "
                    "a request in progress; retry shortly",
                    headers={"Retry-After": "1"},
                )
            )
            return
        self._start_waiting(timer=True)

    def _make_room(self) -> bool:
        """Close the connection waiting longest without a request being served."""
        while self.waiting:
            other, _ = self.waiting.popitem(last=False)
            if other is not self and not other.transport.is_closing():
                other._stop_waiting()
                other.transport.close()
                return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _start_waiting(self, timer: bool) -> None:
        self.waiting[self] = None
        if timer and self._read_timer is None:
            self._read_timer = self.loop.call_later(self.limits.read_timeout, self._read_timeout)

    def _stop_waiting(self) -> None:
        self.waiting.pop(self, None)
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timeout(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if not self._sent_any:
            self._stop_waiting()
            self.transport.close()
            return
        if self.cycle is not None and self.cycle.response_started:
            return  # pragma: no cover - a response starts only after the whole request
        self._reject(
            TetherError(
                408,
                "request_timeout",
                f"the request did not arrive within {self.limits.read_timeout:g} seconds",
            )
        )

    def _reject(self, error: TetherError) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.write(raw_response(error))
            self.transport.close()

    # -- bytes in --------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._sent_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._reject(self._too_large())
            else:
                detail = str(exc)[:200]
                message = f"the request is not valid HTTP/1.1 ({detail})"
                self._reject(TetherError(400, "invalid_http_request", message))
            return
        if self._in_head:  # this chunk ended inside a head: count it whole
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._reject(self._too_large())

    def _too_large(self) -> TetherError:
        return TetherError(
            431,
            "request_header_fields_too_large",
            f"the request head is over {self.limits.max_header_bytes} bytes or "
            f"{self.limits.max_headers} headers",
            type="invalid_request_error",
        )

    # -- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._head_size = self._header_count = 0
        self._start_waiting(timer=True)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.limits.max_header_bytes:
            raise _HeadTooLarge
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if (
            self._header_count > self.limits.max_headers
            or self._head_size > self.limits.max_header_bytes
        ):
            raise _HeadTooLarge
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_waiting()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._start_waiting(timer=False)  # idle: uvicorn's keep-alive timeout closes it


def protocol_class(limits: Limits) -> type[BoundedProtocol]:
    """A protocol class with these limits, for `uvicorn.Config(http=...)`."""
    return type(
        "TetherHttpProtocol", (BoundedProtocol,), {"limits": limits, "waiting": OrderedDict()}
    )
