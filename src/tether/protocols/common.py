"""What every protocol says about where a turn ran: the headers and the `tether` object (its
shape, `TetherInfo`, is the one /openapi.json describes)."""

from __future__ import annotations

from typing import Annotated, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from tether.engine.request import TurnInfo, etag

_CLOSED = ConfigDict(extra="ignore")


@with_config(_CLOSED)
class ForkedFrom(TypedDict):
    conversation_id: str
    seq: int


@with_config(_CLOSED)
class TetherInfo(TypedDict):
    """Where the turn ran."""

    conversation_id: str
    turn_id: str
    epoch: Annotated[
        int, Field(ge=0, description="the checkpoint the model's view was built on (0: none yet)")
    ]
    compacted: Annotated[bool, Field(description="whether a compaction ran during this request")]
    tokens_before: int | None
    tokens_after: int | None
    forked_from: NotRequired[ForkedFrom]


def turn_headers(info: TurnInfo) -> dict[str, str]:
    return {
        "X-Hermes-Session-Id": info.conversation_id,
        "X-Tether-Conversation": info.conversation_id,
        "X-Tether-Turn": info.turn_id,
        "X-Tether-Epoch": str(info.epoch),
        "ETag": etag(info.version),
    }


def tether_object(info: TurnInfo) -> TetherInfo:
    out: TetherInfo = {
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
