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
import functools
import importlib.util
import itertools
import logging
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tether.compaction.tokens import count_message, count_text

SUMMARISER_MARKER = "[[TETHER-SUMMARISER]]"
JSON = "application/json"
SSE = "text/event-stream"
_DONE = b"data: [DONE]\n\n"
_OK = orjson.dumps({"ok": True})
FAULTS = ("reset", "truncate", "malformed", "junk", "stall")
JUNK_BYTES = 10 * 1024 * 1024
_JUNK_BLOCK = bytes(range(256)) * 256  # 64 KiB: control bytes, newlines, invalid UTF-8
_MALFORMED_FRAME = b'data: {"id": "x", "choices": [\n\n'
_TRANSPORT_EXT = "tether.testing.transport"  # the ASGI scope extension carrying the connection


class ScriptedDisconnect(Exception):
    """Raised inside a response to cut the connection (``fail_after_chunks``, ``fault``)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted ``fault`` (see the module docstring)."""

    kind: str
    after: int | None  # streamed content chunks sent before it; None: at the start
    stall: float
    junk_bytes: int
    transport: Any  # the connection's asyncio (or uvloop) transport, for "reset"


def _parse_fault(item: dict[str, Any], request: Request) -> Fault | None:
    kind = item.get("fault")
    if kind is None:
        return None
    if kind not in FAULTS:
        raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
    after = item.get("fault_after_chunks")
    extension = (request.scope.get("extensions") or {}).get(_TRANSPORT_EXT) or {}
    transport = extension.get("transport")
    return Fault(
        kind,
        None if after is None else int(after),
        float(item.get("stall", 30)),
        int(item.get("junk_bytes", JUNK_BYTES)),
        transport,
    )


def _junk(size: int) -> Iterator[bytes]:
    full, rest = divmod(size, len(_JUNK_BLOCK))
    for _ in range(full):
        yield _JUNK_BLOCK
    if rest:
        yield _JUNK_BLOCK[:rest]


async def _reset(transport: Any) -> NoReturn:
    """Close the connection abruptly: with ``SO_LINGER`` 0 the kernel sends RST, not FIN."""
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await asyncio.sleep(0.01)  # let the server notice the connection is gone
    raise ScriptedDisconnect("scripted reset")


@dataclass
class UpstreamState:
    context_window: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    queue: list[dict[str, Any]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens as a real server would count them (o200k_base, chat framing). Counts are
    cached per message, so resent histories cost little: a benchmark's upstream must be fast."""
    return 3 + sum(_count_cached(orjson.dumps(m, option=orjson.OPT_SORT_KEYS)) for m in messages)


@functools.lru_cache(maxsize=65536)
def _count_cached(message_json: bytes) -> int:
    return count_message(orjson.loads(message_json))


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m)
    return ""


def default_reply(messages: list[dict[str, Any]]) -> str:
    systems = [m for m in messages if m.get("role") == "system"]
    if any(SUMMARISER_MARKER in message_text(m) for m in systems):
        return f"SUMMARY of {len(messages) - len(systems)} messages"
    return "echo: " + _last_user_text(messages)


def _pop_item(state: UpstreamState, messages: list[dict[str, Any]]) -> dict[str, Any]:
    if not state.queue:
        return {}
    last_user: str | None = None
    for i, item in enumerate(state.queue):
        match = item.get("match")
        if match is None:
            return state.queue.pop(i)
        if last_user is None:
            last_user = _last_user_text(messages)
        if str(match) in last_user:
            return state.queue.pop(i)
    return {}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type=JSON)


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _stream_frames(
    head: bytes,
    content: str | None,
    tool_calls: list[dict[str, Any]] | None,
    chunk_size: int,
    finish_reason: str,
    usage_frame: bytes | None,
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(kind, frame)`` for one streamed completion; kind is role, content, tool, final,
    usage or done."""
    tail = b',"finish_reason":null,"logprobs":null}]}\n\n'
    yield "role", head + b'{"role":"assistant","content":""}' + tail
    for piece in _pieces(content or "", chunk_size):
        yield "content", head + orjson.dumps({"content": piece}) + tail
    for idx, tc in enumerate(tool_calls or ()):
        fn = tc.get("function") or {}
        first = {
            "index": idx,
            "id": tc.get("id") or f"call_{idx}",
            "type": tc.get("type", "function"),
            "function": {"name": fn.get("name", ""), "arguments": ""},
        }
        yield "tool", head + orjson.dumps({"tool_calls": [first]}) + tail
        args = str(fn.get("arguments") or "")
        half = (len(args) + 1) // 2
        for part in (args[:half], args[half:]):
            if part:
                delta = {"tool_calls": [{"index": idx, "function": {"arguments": part}}]}
                yield "tool", head + orjson.dumps(delta) + tail
    final = orjson.dumps({"finish_reason": finish_reason, "logprobs": None})[1:]
    yield "final", head + b"{}," + final + b"]}\n\n"
    if usage_frame is not None:
        yield "usage", usage_frame
    yield "done", _DONE


async def _drip(
    frames: Iterator[tuple[str, bytes]],
    chunk_delay: float,
    fail_after: int | None,
    fault: Fault | None = None,
    pause: tuple[int, float] | None = None,
) -> AsyncIterator[bytes]:
    sent = 0
    for kind, frame in frames:
        is_content = kind == "content"
        # a pause strikes before the content chunk after `after` of them (or before the first
        # tool-call or final chunk, if the content ran out sooner)
        if pause is not None and (
            (is_content and sent >= pause[0]) or kind in ("tool", "final", "usage", "done")
        ):
            await asyncio.sleep(pause[1])
            pause = None
        # a fault strikes before the first frame, or after `after` content chunks (or all of
        # them, if fewer: before the final chunk)
        if fault is not None and (
            kind == "role"
            if fault.after is None
            else (is_content and sent >= fault.after) or kind in ("tool", "final")
        ):
            if fault.kind == "reset":
                await _reset(fault.transport)
            if fault.kind == "truncate":
                return
            if fault.kind == "junk":
                for block in _junk(fault.junk_bytes):
                    yield block
                return
            if fault.kind == "malformed":
                yield _MALFORMED_FRAME
            if fault.kind == "stall":
                await asyncio.sleep(fault.stall)
            fault = None
        if fail_after is not None and is_content and sent >= fail_after:
            raise ScriptedDisconnect(f"scripted disconnect after {sent} content chunks")
        if frame is _DONE and fail_after is not None:
            raise ScriptedDisconnect(f"scripted disconnect after {sent} content chunks")
        yield frame
        sent += is_content
        if chunk_delay:
            await asyncio.sleep(chunk_delay)


async def _cut_in_half(payload: bytes) -> AsyncIterator[bytes]:
    yield payload[: len(payload) // 2]
    raise ScriptedDisconnect("scripted truncation")


async def _after_stall(payload: bytes, stall: float) -> AsyncIterator[bytes]:
    await asyncio.sleep(stall)
    yield payload


def _json_fault(fault: Fault, payload: bytes) -> Response:
    """A JSON reply broken at its start ("reset" never gets here: it has no response)."""
    if fault.kind == "junk":
        return Response(b"".join(_junk(fault.junk_bytes)), media_type=JSON)
    if fault.kind == "malformed":
        return Response(b"<html>bad gateway</html>", media_type=JSON)
    length = {"content-length": str(len(payload))}
    if fault.kind == "truncate":
        return StreamingResponse(_cut_in_half(payload), headers=length, media_type=JSON)
    return StreamingResponse(_after_stall(payload, fault.stall), headers=length, media_type=JSON)


def create_app(context_window: int | None = None) -> Starlette:
    state = UpstreamState(context_window=context_window)
    model_obj: dict[str, Any] = {"id": "scripted", "object": "model", "created": 0}
    model_obj["owned_by"] = "tether"
    if context_window is not None:
        model_obj["context_window"] = context_window
    models_body = orjson.dumps({"object": "list", "data": [model_obj]})

    async def chat_completions(request: Request) -> Response:
        body: dict[str, Any] = orjson.loads(await request.body())
        state.requests.append(
            {"body": body, "headers": dict(request.headers), "path": "/v1/chat/completions"}
        )
        messages: list[dict[str, Any]] = body.get("messages") or []
        prompt_tokens = estimate_prompt_tokens(messages)
        if state.context_window is not None:
            wanted = prompt_tokens + (
                body.get("max_tokens") or body.get("max_completion_tokens") or 0
            )
            if wanted > state.context_window:
                message = (
                    f"This model's maximum context length is {state.context_window} tokens. "
                    f"However, your messages resulted in {wanted} tokens."
                )
                err = {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
                return _json({"error": err}, 400)

        item = _pop_item(state, messages)
        try:
            fault = _parse_fault(item, request)
        except ValueError as exc:
            return _json({"error": {"message": str(exc), "code": "bad_script"}}, 400)
        if item.get("delay"):
            await asyncio.sleep(float(item["delay"]))
        if item.get("status"):
            default_err = {"message": "scripted error", "type": "server_error", "code": "scripted"}
            headers = {"retry-after": str(item["retry_after"])} if item.get("retry_after") else None
            return _json({"error": item.get("error") or default_err}, int(item["status"]), headers)

        tool_calls: list[dict[str, Any]] | None = item.get("tool_calls") or None
        if "content" in item:
            content: str | None = item["content"]
        else:
            content = None if tool_calls else default_reply(messages)
        completion_tokens = max(1, count_text(content or ""))
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if item.get("usage"):
            usage.update(item["usage"])
            if "total_tokens" not in item["usage"]:
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        finish_reason = item.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
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
            await _reset(fault.transport)  # before the status line

        if item.get("malformed"):  # a broken upstream: not JSON where JSON belongs
            if not body.get("stream"):
                return Response(b"<html>bad gateway</html>", media_type=JSON)
            return Response(b"data: " + b'{"id": "x", "choices": [' + b"\n\n", media_type=SSE)

        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            if tool_calls:
                msg["tool_calls"] = tool_calls
            msg.update(item.get("message_extra") or {})
            choice = {"index": 0, "message": msg, "finish_reason": finish_reason, "logprobs": None}
            reply = {"object": "chat.completion", **meta, "choices": [choice], "usage": usage}
            if fault is not None:
                return _json_fault(fault, orjson.dumps(reply))
            return _json(reply)

        chunk_meta = {"id": meta["id"], "object": "chat.completion.chunk", **meta}
        head = b"data: " + orjson.dumps(chunk_meta)[:-1] + b',"choices":[{"index":0,"delta":'
        usage_frame = None
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and not item.get("no_usage"):
            usage_chunk: dict[str, Any] = {**chunk_meta, "choices": [], "usage": usage}
            usage_frame = b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
        frames = _stream_frames(
            head,
            content,
            tool_calls,
            int(item.get("chunk_size") or 4),
            finish_reason,
            usage_frame,
        )
        chunk_delay = float(item.get("chunk_delay") or 0)
        fail_after = item.get("fail_after_chunks")
        pause = None
        if item.get("pause"):
            pause = (int(item.get("pause_after_chunks") or 0), float(item["pause"]))
        if not chunk_delay and fail_after is None and fault is None and pause is None:
            # Fast path: the whole event stream in one write.
            return Response(b"".join(f for _, f in frames), media_type=SSE)
        return StreamingResponse(
            _drip(
                frames, chunk_delay, None if fail_after is None else int(fail_after), fault, pause
            ),
            media_type=SSE,
        )

    async def models(request: Request) -> Response:
        return Response(models_body, media_type=JSON)

    async def get_requests(request: Request) -> Response:
        return _json(state.requests)

    async def reset(request: Request) -> Response:
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
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_script/requests", get_requests, methods=["GET"]),
            Route("/_script/reset", reset, methods=["POST"]),
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
