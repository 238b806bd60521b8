"""`POST /v1/responses/compact`'s wire shapes: the `response.compaction` object and its
`compaction` item, and what a later `POST /v1/responses` makes of that item in its input.

Tether holds the state, so the item's `encrypted_content` is not encrypted: it is an opaque,
versioned token (`tether1.` + base64url JSON) naming the stored conversation it compacted (a
checkpoint there), or — for input that belongs to no conversation — carrying the summary itself.
Given back, the first continues that conversation with only the items after it (the ones before
it are the compaction's echo, already stored); the second becomes the new conversation's
instructions, framed as compaction frames a summary."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import orjson

from tether.compaction.summary import frame
from tether.errors import TetherError

PREFIX = "tether1."


def encode(*, conversation: str | None, epoch: int, summary: str | None) -> str:
    token = orjson.dumps({"c": conversation, "e": epoch, "s": summary})
    return PREFIX + base64.urlsafe_b64encode(token).decode().rstrip("=")


def decode(content: Any, where: str) -> dict[str, Any]:
    bad = TetherError(
        400,
        "invalid_request",
        "encrypted_content is not a compaction item this server made",
        param=where,
    )
    if not isinstance(content, str) or not content.startswith(PREFIX):
        raise bad
    raw = content[len(PREFIX) :]
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad from None
    if not isinstance(data, dict) or not isinstance(data.get("c") or data.get("s"), str):
        raise bad
    return data


def item(
    *, item_id: str, conversation: str | None, epoch: int, summary: str | None
) -> dict[str, Any]:
    content = encode(conversation=conversation, epoch=epoch, summary=summary)
    return {
        "type": "compaction",
        "id": item_id,
        "encrypted_content": content,
        "created_by": "tether",
    }


def compacted(rid: str, output: list[dict[str, Any]], usage: dict[str, int]) -> dict[str, Any]:
    made, used = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    return {
        "id": rid,
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": output,
        "usage": {
            "input_tokens": made,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": used,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": made + used,
        },
    }


def continued(data: dict[str, Any]) -> dict[str, Any]:
    """A create body whose input holds a compaction item, as the body to run: the stored
    conversation it names continued with the items after it; or its summary as instructions."""
    given = data.get("input")
    if not isinstance(given, list):
        return data
    at = [i for i, x in enumerate(given) if isinstance(x, dict) and x.get("type") == "compaction"]
    if not at:
        return data
    last = at[-1]
    token = decode(given[last].get("encrypted_content"), f"input[{last}].encrypted_content")
    if token.get("c"):
        if data.get("conversation") is not None or data.get("previous_response_id") is not None:
            raise TetherError(
                400,
                "invalid_request",
                "a stored conversation's compaction item continues it: give no conversation "
                "or previous_response_id beside it",
                param="input",
            )
        rest = given[last + 1 :]
        if not rest:
            raise TetherError(
                400, "invalid_request", "nothing new after the compaction item", param="input"
            )
        return {**data, "conversation": token["c"], "input": rest}
    summary = {"type": "message", "role": "system", "content": frame(str(token["s"]), [])}
    kept = [x for i, x in enumerate(given) if i not in at]
    return {**data, "input": [summary, *kept]}
