"""A broken upstream, scripted: the ``fault`` of an item (see `tether.testing.upstream`), the
streamed frames dripped with delays, pauses, disconnects and faults, and a JSON reply broken at
its start."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from starlette.responses import Response, StreamingResponse

from tether.testing.script import DONE

JSON = "application/json"
FAULTS = ("reset", "truncate", "malformed", "junk", "stall")
JUNK_BYTES = 10 * 1024 * 1024
_JUNK_BLOCK = bytes(range(256)) * 256  # 64 KiB: control bytes, newlines, invalid UTF-8
MALFORMED_FRAME = b'data: {"id": "x", "choices": [\n\n'


class ScriptedDisconnect(Exception):
    """Raised inside a response to cut the connection (``fail_after_chunks``, ``fault``)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted ``fault`` (see the module docstring of `tether.testing.upstream`)."""

    kind: str
    after: int | None  # streamed content chunks sent before it; None: at the start
    stall: float
    junk_bytes: int
    transport: Any  # the connection's asyncio (or uvloop) transport, for "reset"


def parse_fault(item: dict[str, Any], transport: Any) -> Fault | None:
    kind = item.get("fault")
    if kind is None:
        return None
    if kind not in FAULTS:
        raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
    after = item.get("fault_after_chunks")
    return Fault(
        kind,
        None if after is None else int(after),
        float(item.get("stall", 30)),
        int(item.get("junk_bytes", JUNK_BYTES)),
        transport,
    )


def junk(size: int) -> Iterator[bytes]:
    full, rest = divmod(size, len(_JUNK_BLOCK))
    for _ in range(full):
        yield _JUNK_BLOCK
    if rest:
        yield _JUNK_BLOCK[:rest]


async def reset(transport: Any) -> NoReturn:
    """Close the connection abruptly: with ``SO_LINGER`` 0 the kernel sends RST, not FIN."""
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await asyncio.sleep(0.01)  # let the server notice the connection is gone
    raise ScriptedDisconnect("scripted reset")


def _pause_due(pause: tuple[int, float] | None, kind: str, sent: int) -> bool:
    # a pause strikes before the content chunk after `after` of them (or before the first
    # tool-call or final chunk, if the content ran out sooner)
    return pause is not None and (
        (kind == "content" and sent >= pause[0]) or kind in ("tool", "final", "usage", "done")
    )


def _fault_due(fault: Fault | None, kind: str, sent: int) -> bool:
    # a fault strikes before the first frame, or after `after` content chunks (or all of
    # them, if fewer: before the final chunk)
    return fault is not None and (
        kind == "role"
        if fault.after is None
        else (kind == "content" and sent >= fault.after) or kind in ("tool", "final")
    )


async def _strike(fault: Fault) -> AsyncIterator[bytes]:
    """What a fault sends where it strikes; a "truncate" or "junk" ends the stream after it
    (`drip` checks the kind)."""
    if fault.kind == "reset":
        await reset(fault.transport)
    if fault.kind == "junk":
        for block in junk(fault.junk_bytes):
            yield block
    if fault.kind == "malformed":
        yield MALFORMED_FRAME
    if fault.kind == "stall":
        await asyncio.sleep(fault.stall)


async def drip(
    frames: Iterator[tuple[str, bytes]],
    chunk_delay: float,
    fail_after: int | None,
    fault: Fault | None = None,
    pause: tuple[int, float] | None = None,
) -> AsyncIterator[bytes]:
    sent = 0
    for kind, frame in frames:
        is_content = kind == "content"
        if pause is not None and _pause_due(pause, kind, sent):
            await asyncio.sleep(pause[1])
            pause = None
        if fault is not None and _fault_due(fault, kind, sent):
            async for piece in _strike(fault):
                yield piece
            if fault.kind in ("truncate", "junk"):
                return
            fault = None
        if fail_after is not None and is_content and sent >= fail_after:
            raise ScriptedDisconnect(f"scripted disconnect after {sent} content chunks")
        if frame is DONE and fail_after is not None:
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


def json_fault(fault: Fault, payload: bytes) -> Response:
    """A JSON reply broken at its start ("reset" never gets here: it has no response)."""
    if fault.kind == "junk":
        return Response(b"".join(junk(fault.junk_bytes)), media_type=JSON)
    if fault.kind == "malformed":
        return Response(b"<html>bad gateway</html>", media_type=JSON)
    length = {"content-length": str(len(payload))}
    if fault.kind == "truncate":
        return StreamingResponse(_cut_in_half(payload), headers=length, media_type=JSON)
    return StreamingResponse(_after_stall(payload, fault.stall), headers=length, media_type=JSON)
