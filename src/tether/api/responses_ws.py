"""The Responses API's WebSocket mode (the `openai` SDK's `client.responses.connect()`): a socket
on `/v1/responses`. Each `{"type": "response.create", …}` frame (the fields of
`POST /v1/responses`, flat) starts a response through `api.responses.begin`; its events go out
as text frames, the payloads the SSE stream carries, in the same order. One response at a time:
creates sent meanwhile wait their turn, in order (at most PENDING; then the socket is not read
until one starts). A create that fails, a frame that is not one, answers an `error` event,
`{"type": "error", "status", "error": {"type", "code", "message", "param"}}`, and the socket
stays open.

Authenticated as HTTP is: api/gate.py checks the handshake's key and puts the tenant in the
scope (401 refuses the handshake). Every create is authenticated again with the same header, so
it takes a rate-limit token and a revoked key (or open mode ending) stops the socket. A browser
page cannot send that header, but in open mode it needs none: a handshake from an `Origin` CORS
does not allow is refused (403), so no web page drives a local server.

`store: false` responses are remembered on the socket while it lives (the REMEMBERED latest): a
`previous_response_id` naming one continues it. What the chain said since its last stored point
(each response's input, then its output) goes in front of the new input, from that point; the
model sees the whole history, and the events name the response the client named. A client that
leaves mid-response: the turn goes on and commits (`on_disconnect = cancel`: it is stopped)."""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from tether.api.access import TENANT_KEY
from tether.api.body import check_depth
from tether.api.errors import error_of
from tether.api.gate import deny_socket
from tether.api.responses import begin
from tether.api.state import AppState
from tether.coordination.stream import TurnStream
from tether.errors import TetherError
from tether.protocols.responses_items import messages_from_input

log = structlog.get_logger("tether.responses_ws")

PATH = "/v1/responses"
PENDING = 8  # creates waiting behind the running response
REMEMBERED = 16  # store: false responses a socket can continue
ENDED = frozenset({b"response.completed", b"response.incomplete"})
LIFECYCLE = ENDED | {b"response.created", b"response.in_progress", b"response.failed"}
STREAM_ID = re.compile(r"[A-Za-z0-9_.-]{1,256}")
TRANSPORT = ("stream", "stream_options", "background", "generate")  # not the response's fields


@dataclass(slots=True)
class Create:
    """One `response.create`: the body `begin` gets, its lane, and (once the socket's memory
    continued it) the previous response the client named."""

    data: dict[str, Any]
    stream_id: str | None = None
    named: str | None = None


@dataclass(frozen=True, slots=True)
class Unstored:
    """A `store: false` response made on this socket: the stored point its chain continues
    (`previous_response_id` or `conversation`; none: a new conversation), and the chain since
    as input items."""

    base: dict[str, Any]
    items: list[Any]


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> TetherError:
    return TetherError(400, code, message, param=param)


def parse(frame: str | bytes | None, limit: int) -> Create:
    """A client frame → the create it asks for (TetherError: why it is not one)."""
    raw = frame.encode() if isinstance(frame, str) else frame or b""
    if len(raw) > limit:
        raise TetherError(413, "request_too_large", f"the event is larger than {limit} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the event is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise _bad(f"an event is a JSON object, not {type(data).__name__}")
    kind = data.pop("type", None)
    if kind != "response.create":
        raise _bad(f"unknown event type {str(kind)[:80]!r}: send response.create", "type")
    stream_id = data.pop("stream_id", None)
    if stream_id is not None and not (
        isinstance(stream_id, str) and STREAM_ID.fullmatch(stream_id)
    ):
        raise _bad("stream_id is 1-256 characters of A-Z a-z 0-9 _ . -", "stream_id")
    if data.get("background"):
        raise _bad("background is not supported over WebSocket", "background")
    if data.get("generate") is False:
        raise _bad("generate: false (a warm-up) is not supported", "generate")
    for name in TRANSPORT:
        data.pop(name, None)
    check_depth(data, raw, skip="input")  # `input`'s items are checked as they are read
    data["stream"] = True
    return Create(data, stream_id)


def error_event(error: TetherError, stream_id: str | None = None) -> str:
    """The socket's `error` event: the HTTP status and the error envelope's fields, nested."""
    body = error.body()["error"]
    if error.headers:
        body["headers"] = error.headers
    event: dict[str, Any] = {"type": "error", "status": error.status, "error": body}
    if stream_id is not None:
        event["stream_id"] = stream_id
    return orjson.dumps(event).decode()


def _kind(payload: bytes) -> bytes:
    """An event's type, from its first bytes (the projection writes `type` first)."""
    if payload.startswith(b'{"type":"'):
        return payload[9 : payload.find(b'"', 9)]
    found = orjson.loads(payload).get("type") if payload.startswith(b"{") else None
    return str(found or "").encode()


def shaped(payload: bytes, create: Create) -> str:
    """A payload as this socket sends it: the previous response as the client named it, its
    lane's `stream_id`."""
    if create.named is not None and _kind(payload) in LIFECYCLE:
        event = orjson.loads(payload)
        event["response"]["previous_response_id"] = create.named
        payload = orjson.dumps(event)
    if create.stream_id is not None:
        payload = b'{"stream_id":%b,%b' % (orjson.dumps(create.stream_id), payload[1:])
    return payload.decode()


def _as_items(value: Any) -> list[Any]:
    """`input` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value)


def _client_error(exc: Exception) -> TetherError:
    error = error_of(exc)
    if error is None:
        log.exception("responses_ws.crashed")
        error = TetherError(500, "internal_error", "internal error; the server log has the details")
    return error


class ResponsesSocket:
    """One accepted socket: a reader queueing the client's frames, a worker answering them in
    order, the unstored responses it can continue."""

    def __init__(self, websocket: WebSocket, state: AppState, header: str | None) -> None:
        self.ws = websocket
        self.state = state
        self.header = header  # the handshake's Authorization, checked again for every create
        self.pending: asyncio.Queue[Create | TetherError] = asyncio.Queue(PENDING)
        self.unstored: OrderedDict[str, Unstored] = OrderedDict()
        self.running: TurnStream | None = None

    async def serve(self) -> None:
        reader = asyncio.ensure_future(self._read())
        worker = asyncio.ensure_future(self._work())
        try:
            await asyncio.wait([reader, worker], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, worker):
                task.cancel()
            outcomes = await asyncio.gather(reader, worker, return_exceptions=True)
        # a response still under way: the client left, or stopped reading
        if self.running is not None and self.state.settings.on_disconnect == "cancel":
            self.running.stop()
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.error("responses_ws.failed", error=repr(outcome))

    async def _read(self) -> None:
        limit = self.state.settings.max_body_bytes
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text")
            item: Create | TetherError
            try:
                item = parse(frame if frame is not None else message.get("bytes"), limit)
            except TetherError as exc:
                item = exc
            await self.pending.put(item)

    async def _work(self) -> None:
        """Answer the queued frames in order; returns when the socket is done for."""
        try:
            while True:
                item = await self.pending.get()
                if isinstance(item, TetherError):
                    await self.ws.send_text(error_event(item))
                elif not await self._answer(item):
                    return
        except WebSocketDisconnect:
            return

    async def _answer(self, create: Create) -> bool:
        """Run one create to its last event (or its error event); whether to go on."""
        try:
            tenant = await self.state.auth.authenticate(self.header)
            if tenant != self.ws.scope[TENANT_KEY]:
                raise TetherError(401, "invalid_api_key", "the socket's tenant changed")
            data = self._continued(create)
            begun = await begin(self.state, tenant, data, None, PATH)
        except Exception as exc:
            error = _client_error(exc)
            await self.ws.send_text(error_event(error, create.stream_id))
            if error.status == 401:  # the key was revoked, or open mode ended: no more
                await self.ws.close(1008, error.code)
                return False
            return True
        assert begun.run is not None
        return await self._relay(begun.run.out, create)

    def _continued(self, create: Create) -> dict[str, Any]:
        """The body to start: a create continuing an unstored response of this socket
        continues its chain's stored point with the chain's items in front of its input."""
        data = create.data
        previous = data.get("previous_response_id")
        memory = self.unstored.get(previous) if isinstance(previous, str) else None
        if memory is None or data.get("conversation") is not None:
            return data  # a stored response (or none, or a 400 for naming both)
        messages_from_input(data.get("input"))  # the new input, checked (and named) as sent
        self.unstored.move_to_end(str(previous))
        create.named = str(previous)
        rest = {k: v for k, v in data.items() if k != "previous_response_id"}
        create.data = {**rest, **memory.base, "input": [*memory.items, *_as_items(data["input"])]}
        return create.data

    async def _relay(self, out: TurnStream, create: Create) -> bool:
        """The response's events out, in order; whether the client took them all."""
        self.running, last = out, b""
        timeout = self.state.settings.stream_send_timeout
        try:
            async for _, payloads in out.follow(0):
                frames = [shaped(p, create) for p in payloads if not p.startswith(b":")]
                async with asyncio.timeout(timeout):
                    for frame in frames:
                        await self.ws.send_text(frame)
                last = payloads[-1]
        except TimeoutError:  # let go (the turn goes on, unless on_disconnect = cancel)
            log.warning("stream.client_stalled", timeout_s=timeout, transport="websocket")
            return False
        self.running = None
        self._remember(create, last)
        return True

    def _remember(self, create: Create, last: bytes) -> None:
        """Keep a finished `store: false` response for a later create to continue."""
        data = create.data
        if data.get("store") is not False or _kind(last) not in ENDED:
            return
        response = orjson.loads(last)["response"]
        base = {k: data[k] for k in ("previous_response_id", "conversation") if data.get(k)}
        items = [*_as_items(data["input"]), *(response.get("output") or ())]
        self.unstored[response["id"]] = Unstored(base, items)
        while len(self.unstored) > REMEMBERED:
            self.unstored.popitem(last=False)


def _origin_allowed(websocket: WebSocket, origins: list[str]) -> bool:
    """No `Origin` (not a browser), or one CORS allows."""
    origin = websocket.headers.get("origin")
    return origin is None or "*" in origins or origin in origins


async def responses_socket(websocket: WebSocket) -> None:
    """`/v1/responses` as a WebSocket (api/routes.py), authenticated by api/gate.py."""
    state = cast(AppState, websocket.app.state.tether)
    if not _origin_allowed(websocket, state.settings.cors_origins):
        error = TetherError(
            403,
            "origin_not_allowed",
            "a WebSocket from a web page needs its origin in TETHER_CORS_ORIGINS",
            param="origin",
        )
        await deny_socket(websocket.scope, websocket.receive, websocket.send, error)
        return
    await websocket.accept()
    await ResponsesSocket(websocket, state, websocket.headers.get("authorization")).serve()
