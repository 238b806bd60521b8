"""Scripted, OpenAI-compatible fake LLM server for tests, benchmarks and demos.

Run as ``python -m tether.testing.upstream --host 127.0.0.1 --port PORT``.  Every
``POST /v1/chat/completions`` is recorded; replies come from a script queue filled via
``POST /_script/queue`` or default to ``"echo: <last user text>"``.

Each request takes the first queued item whose ``match`` is in its last user message (items
without ``match`` match any). An item's keys, all optional:

- ``content`` (reply text), ``tool_calls`` (OpenAI tool calls), ``finish_reason``, ``usage``
  (overrides the counted usage); ``message_extra``: more fields on a JSON reply's message (e.g.
  ``annotations``); ``no_usage``: a stream sends no usage chunk even when asked (as llama.cpp's
  Python server does);
- ``delay``: seconds to wait before answering at all (no status line yet);
- ``status``, ``error``, ``retry_after``: answer this HTTP error with this ``error`` object and a
  ``Retry-After`` header;
- ``chunk_size`` (characters per streamed content chunk, default 4) and ``chunk_delay`` (seconds
  between streamed frames);
- ``pause`` and ``pause_after_chunks``: one silence of ``pause`` seconds in a stream, after the
  first (role-only) chunk and ``pause_after_chunks`` N content chunks (default 0: right after the
  role chunk) — a model that stops to think mid-answer. A reply with fewer content chunks pauses
  once its content ran out (before any tool-call chunk and the final chunk). JSON replies ignore
  it (use ``delay``);
- ``malformed``: answer 200 with a body that is not JSON (streams: one broken ``data:`` frame);
- ``fail_after_chunks``: N — close the connection after N streamed content chunks (or before
  ``[DONE]``), without finishing the chunked body;
- ``fault``: a broken upstream. Where: with ``fault_after_chunks`` N, after the first (role-only)
  chunk and N content chunks — or, if the reply has fewer, once its content ran out (before any
  tool-call chunk and the final chunk); without it, at the start of the response. JSON replies
  always break at the start. What: one of

  - ``"reset"``: close the TCP connection abruptly (RST, ``SO_LINGER`` 0; needs the server
    ``main`` runs, elsewhere it is a plain close); at the start this is before the status line;
  - ``"truncate"``: end the response early but cleanly — a stream without its final chunk and
    ``[DONE]``; a JSON body cut in half (short of its ``Content-Length``);
  - ``"malformed"``: a stream frame that is not JSON, then the rest of the stream as usual;
  - ``"junk"``: ``junk_bytes`` (default 10 MiB) of binary junk with stray newlines, then the
    end of the response (a JSON reply is only the junk);
  - ``"stall"``: the status line and headers, then ``stall`` seconds (default 30) of silence,
    then the rest of the response.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import logging
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tether.testing.faults import (
    Fault,
    ScriptedDisconnect,
    drip,
    json_fault,
    parse_fault,
    reset,
)
from tether.testing.script import (
    SUMMARISER_MARKER,
    Reply,
    completion,
    context_length_error,
    default_reply,
    estimate_prompt_tokens,
    message_text,
    pop_item,
    scripted_error,
    scripted_reply,
    stream_frames,
)

__all__ = [
    "SUMMARISER_MARKER",
    "Fault",
    "ScriptedDisconnect",
    "UpstreamState",
    "create_app",
    "default_reply",
    "estimate_prompt_tokens",
    "main",
    "message_text",
]

JSON = "application/json"
SSE = "text/event-stream"
_OK = orjson.dumps({"ok": True})
_TRANSPORT_EXT = "tether.testing.transport"  # the ASGI scope extension carrying the connection


@dataclass
class UpstreamState:
    context_window: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    queue: list[dict[str, Any]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type=JSON)


def _transport(request: Request) -> Any:
    extension = (request.scope.get("extensions") or {}).get(_TRANSPORT_EXT) or {}
    return extension.get("transport")


async def chat_completions(state: UpstreamState, request: Request) -> Response:
    body: dict[str, Any] = orjson.loads(await request.body())
    state.requests.append(
        {"body": body, "headers": dict(request.headers), "path": "/v1/chat/completions"}
    )
    messages: list[dict[str, Any]] = body.get("messages") or []
    prompt_tokens = estimate_prompt_tokens(messages)
    too_long = context_length_error(state.context_window, body, prompt_tokens)
    if too_long is not None:
        return _json(too_long, 400)

    item = pop_item(state.queue, messages)
    try:
        fault = parse_fault(item, _transport(request))
    except ValueError as exc:
        return _json({"error": {"message": str(exc), "code": "bad_script"}}, 400)
    if item.get("delay"):
        await asyncio.sleep(float(item["delay"]))
    if item.get("status"):
        headers = {"retry-after": str(item["retry_after"])} if item.get("retry_after") else None
        return _json(scripted_error(item), int(item["status"]), headers)

    reply = scripted_reply(item, messages, prompt_tokens)
    meta = {
        "id": f"chatcmpl-{next(state.ids):08x}",
        "created": int(time.time()),
        "model": body.get("model") or "scripted",
    }

    if (
        fault is not None
        and fault.kind == "reset"
        and (fault.after is None or not body.get("stream"))
    ):
        await reset(fault.transport)  # before the status line

    if item.get("malformed"):  # a broken upstream: not JSON where JSON belongs
        if not body.get("stream"):
            return Response(b"<html>bad gateway</html>", media_type=JSON)
        return Response(b"data: " + b'{"id": "x", "choices": [' + b"\n\n", media_type=SSE)

    if not body.get("stream"):
        answer = completion(reply, meta, item.get("message_extra"))
        if fault is not None:
            return json_fault(fault, orjson.dumps(answer))
        return _json(answer)
    return _stream(reply, meta, body, item, fault)


def _stream(
    reply: Reply,
    meta: dict[str, Any],
    body: dict[str, Any],
    item: dict[str, Any],
    fault: Fault | None,
) -> Response:
    frames = stream_frames(reply, meta, body, item)
    chunk_delay = float(item.get("chunk_delay") or 0)
    fail_after = item.get("fail_after_chunks")
    pause = None
    if item.get("pause"):
        pause = (int(item.get("pause_after_chunks") or 0), float(item["pause"]))
    if not chunk_delay and fail_after is None and fault is None and pause is None:
        # Fast path: the whole event stream in one write.
        return Response(b"".join(f for _, f in frames), media_type=SSE)
    return StreamingResponse(
        drip(frames, chunk_delay, None if fail_after is None else int(fail_after), fault, pause),
        media_type=SSE,
    )


def create_app(context_window: int | None = None) -> Starlette:
    state = UpstreamState(context_window=context_window)
    model_obj: dict[str, Any] = {"id": "scripted", "object": "model", "created": 0}
    model_obj["owned_by"] = "tether"
    if context_window is not None:
        model_obj["context_window"] = context_window
    models_body = orjson.dumps({"object": "list", "data": [model_obj]})

    async def completions(request: Request) -> Response:
        return await chat_completions(state, request)

    async def models(request: Request) -> Response:
        return Response(models_body, media_type=JSON)

    async def get_requests(request: Request) -> Response:
        return _json(state.requests)

    async def reset_script(request: Request) -> Response:
        state.requests.clear()
        state.queue.clear()
        return Response(_OK, media_type=JSON)

    async def queue(request: Request) -> Response:
        items = orjson.loads(await request.body())
        if isinstance(items, dict):
            items = [items]
        state.queue.extend(items)
        return _json({"queued": len(items)})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_script/requests", get_requests, methods=["GET"]),
            Route("/_script/reset", reset_script, methods=["POST"]),
            Route("/_script/queue", queue, methods=["POST"]),
        ]
    )
    app.state.upstream = state
    return app


def _is_scripted_disconnect(exc: BaseException | None) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_scripted_disconnect(e) for e in exc.exceptions)
    return isinstance(exc, ScriptedDisconnect)


def _quiet_scripted_disconnects(record: logging.LogRecord) -> bool:
    return not (record.exc_info and _is_scripted_disconnect(record.exc_info[1]))


def _protocol() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Protocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, handing each request its connection's transport (in
        the ASGI scope's extensions) so that a script can reset it (``fault: reset``)."""

        def on_message_begin(self) -> None:
            super().on_message_begin()
            extensions = self.scope.setdefault("extensions", {})
            extensions[_TRANSPORT_EXT] = {"transport": self.transport}

    return Protocol


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible fake upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--context-window", type=int, default=None)
    args = parser.parse_args(argv)

    config = uvicorn.Config(
        create_app(args.context_window),
        log_level="warning",
        access_log=False,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=_protocol(),
        timeout_graceful_shutdown=1,
    )
    logging.getLogger("uvicorn.error").addFilter(_quiet_scripted_disconnects)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    # The socket already accepts connections (kernel backlog), so announce now.
    sys.stdout.write(f"scripted-upstream listening on http://{host}:{port}\n")
    sys.stdout.flush()
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
