"""A conversation's stored messages as the Conversations API's items (`GET
/v1/conversations/{id}/items`), and back from an item id to where it is stored. A message is one
item (an assistant message with tool calls: its text, then one `function_call` per call; a tool
result: a `function_call_output`); an item's id names its message's seq and its place in it
(`msg_12`, `fc_12_1`, `fco_13`), so it is the same every time it is read and needs no table."""

from __future__ import annotations

import re
from typing import Any

from tether.engine.service import Engine
from tether.errors import TetherError
from tether.model import Conversation, Message

CHUNK = 64  # messages read at a time while paging
_ID = re.compile(r"(msg|fc|fco)_([1-9][0-9]{0,11})(?:_([0-9]{1,4}))?")


def seq_of(item_id: str) -> int | None:
    """The seq of the message an item id names; None for an id no item has."""
    match = _ID.fullmatch(item_id)
    return int(match.group(2)) if match else None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _parts(m: Message) -> list[dict[str, Any]]:
    if m.role == "assistant":
        text = _text(m.content)
        if not text:
            return []
        return [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    if isinstance(m.content, list):
        parts: list[dict[str, Any]] = []
        for p in m.content:
            if not isinstance(p, dict):
                continue
            if p.get("type") == "image_url":
                url = (p.get("image_url") or {}).get("url")
                parts.append({"type": "input_image", "image_url": url, "detail": "auto"})
            elif isinstance(p.get("text"), str):
                parts.append({"type": "input_text", "text": p["text"]})
        return parts
    return [{"type": "input_text", "text": _text(m.content)}]


def items_of(m: Message) -> list[dict[str, Any]]:
    """The items one stored message is, in order."""
    if m.role == "tool":
        return [
            {
                "type": "function_call_output",
                "id": f"fco_{m.seq}",
                "call_id": m.tool_call_id,
                "output": _text(m.content),
                "status": "completed",
            }
        ]
    found: list[dict[str, Any]] = []
    parts = _parts(m)
    if parts or not m.tool_calls:
        found.append(
            {
                "type": "message",
                "id": f"msg_{m.seq}",
                "status": "completed",
                "role": m.role,
                "content": parts,
            }
        )
    for k, call in enumerate(m.tool_calls or ()):
        fn = call.get("function") or {}
        found.append(
            {
                "type": "function_call",
                "id": f"fc_{m.seq}_{k}",
                "call_id": call.get("id"),
                "name": fn.get("name"),
                "arguments": fn.get("arguments", ""),
                "status": "completed",
            }
        )
    return found


def conversation_items(messages: list[Message]) -> list[dict[str, Any]]:
    """The items of stored messages (those removed from the view left out), oldest first."""
    return [item for m in messages if not m.removed for item in items_of(m)]


def item_not_found(item_id: str) -> TetherError:
    return TetherError(404, "item_not_found", f"item {item_id[:80]!r} does not exist")


async def page(
    engine: Engine, conv: Conversation, *, after: str | None, limit: int, order: str
) -> tuple[list[dict[str, Any]], bool]:
    """`limit` items after the item `after` (oldest first, or newest with order=desc), and
    whether more follow. Reads the transcript a chunk at a time, never all of it."""
    start = seq_of(after) if after is not None else None
    if after is not None and (start is None or start > conv.last_seq):
        raise item_not_found(after)
    desc = order == "desc"
    top = start if start is not None and desc else conv.last_seq
    low = start - 1 if start is not None and not desc else 0
    found: list[dict[str, Any]] = []
    seen = after is None
    while len(found) <= limit and (top > 0 if desc else low < conv.last_seq):
        lo, hi = (max(0, top - CHUNK), top) if desc else (low, min(conv.last_seq, low + CHUNK))
        chunk = conversation_items(await engine.store.load_messages(conv.pk, lo, hi))
        if desc:
            chunk.reverse()
            top = lo
        else:
            low = hi
        for item in chunk:
            if seen:
                found.append(item)
            seen = seen or item["id"] == after
    return found[:limit], len(found) > limit


async def get_item(engine: Engine, conv: Conversation, item_id: str) -> dict[str, Any]:
    """One item, by id (a removed one is gone: 404)."""
    seq = seq_of(item_id)
    if seq is None or seq > conv.last_seq:
        raise item_not_found(item_id)
    stored = await engine.store.load_messages(conv.pk, seq - 1, seq)
    item = next((i for i in conversation_items(stored) if i["id"] == item_id), None)
    if item is None:
        raise item_not_found(item_id)
    return item
