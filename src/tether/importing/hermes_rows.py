"""One Hermes message row as what the import works with: a Tether `Message` (or a compaction
summary), and the key two rows are compared by to tell a copy from a new message.

The key is role + content + tool_call_id + tool_calls, never the timestamp: Hermes gives the
copies of a compressing turn's rows new timestamps. User and assistant text is compared
stripped, as Hermes strips it when it loads the rows it copies."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tether.importing.hermes_db import HermesRow
from tether.model import Message

ROLES = ("user", "assistant", "tool", "system")
CONTENT_JSON_PREFIX = "\x00json:"  # Hermes' encoding of a structured (list of parts) content
SUMMARY_MARKERS = ("[CONTEXT COMPACTION", "[CONTEXT SUMMARY]:")  # current, and older Hermes
PRIOR_CONTEXT = "[PRIOR CONTEXT"  # a summary row that embeds an older assistant reply first
SUMMARY_END = "--- END OF CONTEXT SUMMARY"

Key = tuple[str, str, str | None, str | None]


@dataclass(slots=True)
class Item:
    """A row as the conversation sees it: a message, or (`summary` set) a compaction summary."""

    key: Key
    message: Message | None
    summary: str | None
    created_at: float
    active: bool  # what Hermes shows of the session now (False: compacted in place)


@dataclass(slots=True)
class Dropped:
    """Rows left out, by why."""

    roles: dict[str, int]  # a role Tether has no place for
    tool_without_call: int = 0  # a tool result naming no call
    rewound: int = 0  # active=0 without compacted: undone in Hermes (/undo, /retry)

    def notes(self, session_id: str) -> list[str]:
        out = [f"{session_id}: {n} row(s) with role {r!r} left out" for r, n in self.roles.items()]
        if self.tool_without_call:
            out.append(f"{session_id}: {self.tool_without_call} tool row(s) without a call id")
        if self.rewound:
            out.append(f"{session_id}: {self.rewound} rewound row(s) (undone in Hermes) left out")
        return out


def items_of(rows: Iterable[HermesRow], started_at: float) -> tuple[list[Item], Dropped]:
    """A session's rows, in order, as items; what could not be imported is counted."""
    items: list[Item] = []
    dropped = Dropped(roles={})
    for row in rows:
        if not row.active and not row.compacted:
            dropped.rewound += 1
        elif row.role not in ROLES:
            dropped.roles[row.role] = dropped.roles.get(row.role, 0) + 1
        elif row.role == "tool" and not row.tool_call_id:
            dropped.tool_without_call += 1
        else:
            items.extend(_items(row, row.timestamp or started_at))
    return items, dropped


def _items(row: HermesRow, at: float) -> list[Item]:
    content = decode_content(row.content)
    if isinstance(content, str) and row.role in ("user", "assistant") and is_summary(content):
        summary, rest = split_summary(content)
        key: Key = ("summary", summary, None, None)
        out = [Item(key=key, message=None, summary=summary, created_at=at, active=row.active)]
        if rest:  # a carrier row: the summary and the live message in one
            out.append(_item(row, rest, None, at))
        return out
    calls = tool_calls_of(row.tool_calls) if row.role == "assistant" else None
    if calls and content == "":
        content = None
    return [_item(row, content, calls, at)]


def _item(row: HermesRow, content: Any, calls: list[dict[str, Any]] | None, at: float) -> Item:
    tool = row.role == "tool"
    reasoning = row.reasoning if row.role == "assistant" else None
    extra = {"reasoning_content": reasoning} if reasoning else None
    message = Message(
        role=row.role,
        content=content,
        tool_calls=calls,
        tool_call_id=row.tool_call_id if tool else None,
        name=row.tool_name if tool and row.tool_name else None,
        extra=extra,
        created_at=at,
    )
    return Item(
        key=key_of(message), message=message, summary=None, created_at=at, active=row.active
    )


def key_of(m: Message) -> Key:
    content = m.content
    if isinstance(content, str):
        text = content.strip() if m.role in ("user", "assistant") else content
    else:
        text = "" if content is None else json.dumps(content, sort_keys=True)
    calls = json.dumps(m.tool_calls, sort_keys=True) if m.tool_calls else None
    return (m.role, text, m.tool_call_id, calls)


def decode_content(content: Any) -> Any:
    """Text as stored; Hermes' `\\x00json:` content back to its list of parts."""
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    if isinstance(content, str) and content.startswith(CONTENT_JSON_PREFIX):
        try:
            value = json.loads(content[len(CONTENT_JSON_PREFIX) :])
        except ValueError:
            return content
        return value if isinstance(value, list) else json.dumps(value, ensure_ascii=False)
    if content is None or isinstance(content, str):
        return content
    return str(content)


def is_summary(text: str) -> bool:
    head = text.lstrip()
    if head.startswith(SUMMARY_MARKERS):
        return True
    return head.startswith(PRIOR_CONTEXT) and any(m in head for m in SUMMARY_MARKERS)


def split_summary(text: str) -> tuple[str, str]:
    """(the summary, through its END line; what follows it, stripped): a row that carries a
    live message after the summary holds both."""
    at = text.rfind(SUMMARY_END)
    if at < 0:
        return text, ""
    end = text.find("\n", at)
    if end < 0:
        return text, ""
    return text[:end].rstrip(), text[end + 1 :].strip()


def tool_calls_of(raw: str | None) -> list[dict[str, Any]] | None:
    """Hermes' tool_calls JSON ({id, call_id, response_item_id, type, function}) in the OpenAI
    shape; None when there are none (or none usable)."""
    if not raw:
        return None
    try:
        calls = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(calls, list):
        return None
    out = []
    for call in calls:
        if not isinstance(call, dict):
            continue
        fn = call.get("function")
        if not isinstance(fn, dict):
            fn = {}
        call_id = call.get("id") or call.get("call_id")
        name = fn.get("name") or call.get("name")
        if not call_id or not name:
            continue
        args = fn.get("arguments", call.get("arguments", ""))
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        out.append(
            {"id": str(call_id), "type": "function", "function": {"name": name, "arguments": args}}
        )
    return out or None
