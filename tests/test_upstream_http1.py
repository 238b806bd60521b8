"""The upstream's HTTP/1.1 client (`tether.upstream.http1`) against small HTTP servers on
loopback that answer with fixed bytes: keep-alive reuse, the idle limit, bodies by length, by
chunks and by the connection's end, the read timeout, and a connection the server drops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tether.errors import TetherError
from tether.upstream.client import HttpUpstream
from tether.upstream.http1 import ClientError, Disconnected, Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'{"choices": [{"message": {"role": "assistant", "content": "hi"}}]}'


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Serve = Callable[[Handler], Awaitable[tuple[Server, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[Server, str]:
        srv = Server(handler)
        server = await asyncio.start_server(srv._serve, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return srv, f"http://127.0.0.1:{port}/v1"

    yield start
    for server in servers:
        server.close()


def keep_alive(srv_requests: list[bytes], reply: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            srv_requests.append(await read_request(reader))
            writer.write(reply)
            await writer.drain()

    return handler


def json_reply(body: bytes = OK) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


async def test_requests_reuse_one_keep_alive_connection(serve: Serve) -> None:
    seen: list[bytes] = []
    srv, url = await serve(keep_alive(seen, json_reply()))
    pool = Pool(url, headers={"X-A": "1"}, connect_timeout=5, read_timeout=5)
    for _ in range(3):
        reply = await pool.request("POST", "/chat/completions", b'{"m": 1}')
        assert reply.status == 200
        assert await reply.read() == OK
        reply.release()
    assert srv.connections == 1
    assert len(seen) == 3
    head = seen[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert "X-A: 1\r\n" in head and "Content-Length: 8\r\n" in head
    assert seen[0].endswith(b'{"m": 1}')
    pool.close()


async def test_a_connection_idle_past_the_keepalive_is_not_reused(serve: Serve) -> None:
    srv, url = await serve(keep_alive([], json_reply()))
    pool = Pool(url, headers={}, connect_timeout=5, read_timeout=5, keepalive=0.05)
    for _ in range(2):
        reply = await pool.request("GET", "/models")
        await reply.read()
        reply.release()
        await asyncio.sleep(0.1)
    assert srv.connections == 2
    pool.close()


async def test_chunked_and_close_delimited_bodies(serve: Serve) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    _, url = await serve(keep_alive([], chunked))
    pool = Pool(url, headers={}, connect_timeout=5, read_timeout=5)
    reply = await pool.request("GET", "/x")
    assert await reply.read() == b"hello world"
    assert reply.complete

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end")
        await writer.drain()

    _, url2 = await serve(until_close)
    pool2 = Pool(url2, headers={}, connect_timeout=5, read_timeout=5)
    reply = await pool2.request("GET", "/x")
    assert await reply.read() == b"to the end"
    pool.close()
    pool2.close()


async def test_read_timeout_and_a_dropped_connection(serve: Serve) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    _, url = await serve(silent)
    with pytest.raises(TimeoutError):
        await Pool(url, headers={}, connect_timeout=5, read_timeout=0.2).request("GET", "/x")

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    _, url = await serve(drop)
    with pytest.raises(ClientError) as caught:  # a new connection: not taken for a stale one
        await Pool(url, headers={}, connect_timeout=5, read_timeout=5).request("GET", "/x")
    assert not isinstance(caught.value, Disconnected)

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        await writer.drain()

    _, url = await serve(half)
    reply = await Pool(url, headers={}, connect_timeout=5, read_timeout=5).request("GET", "/x")
    with pytest.raises(ClientError):
        await reply.read()


async def test_the_upstream_retries_a_stale_connection_once(serve: Serve) -> None:
    """The server closes a kept-alive connection after each answer without saying so: the next
    request finds it dead, and HttpUpstream sends it again on a new connection."""

    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(json_reply())
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            await read_request(reader)  # the second request on this connection is dropped

    srv, url = await serve(one_then_close)
    upstream = HttpUpstream(url, retries=0)
    for _ in range(3):
        data = await upstream.complete({"model": "m", "messages": []})
        assert data["choices"][0]["message"]["content"] == "hi"
    assert srv.connections >= 3
    await upstream.aclose()


async def test_connection_refused_is_upstream_unreachable() -> None:
    upstream = HttpUpstream("http://127.0.0.1:9/v1", retries=0)
    with pytest.raises(TetherError) as caught:
        await upstream.complete({"model": "m", "messages": []})
    assert caught.value.status == 502
    assert caught.value.code == "upstream_unreachable"
    await upstream.aclose()


async def test_a_stream_released_before_its_end_is_reused_once_the_end_arrived(
    serve: Serve,
) -> None:
    """As at a stream's `[DONE]`: released with the chunked body's end still on the way."""
    sent_end = asyncio.Event()

    async def streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            sent_end.set()

    srv, url = await serve(streams)
    pool = Pool(url, headers={}, connect_timeout=5, read_timeout=5)
    reply = await pool.request("POST", "/chat/completions", b"{}")
    async for piece in reply.chunks():
        assert piece == b"data: [DONE]\n\n"
        break
    assert not reply.complete
    reply.release()
    await sent_end.wait()
    await asyncio.sleep(0.05)
    reply = await pool.request("POST", "/chat/completions", b"{}")
    assert [piece async for piece in reply.chunks()] == [b"data: [DONE]\n\n"]
    assert srv.connections == 1
    pool.close()
