"""What every protocol says about where a turn ran: the headers and the `tether` object."""

from __future__ import annotations

from typing import Any

from tether.engine.request import TurnInfo, etag


def turn_headers(info: TurnInfo) -> dict[str, str]:
    return {
        "X-Hermes-Session-Id": info.conversation_id,
        "X-Tether-Conversation": info.conversation_id,
        "X-Tether-Turn": info.turn_id,
        "X-Tether-Epoch": str(info.epoch),
        "ETag": etag(info.version),
    }


def tether_object(info: TurnInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "conversation_id": info.conversation_id,
        "turn_id": info.turn_id,
        "epoch": info.epoch,
        "compacted": info.compacted,
        "tokens_before": info.tokens_before,
        "tokens_after": info.tokens_after,
    }
    if info.forked_from:
        out["forked_from"] = {"conversation_id": info.forked_from[0], "seq": info.forked_from[1]}
    return out
