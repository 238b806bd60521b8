"""What the search index holds, for every store: the text of a message (user and assistant
text, tool outputs; never a tool call's arguments or a system prompt) and of a checkpoint's
summary, each in a slot of its conversation. SQL stores key a row by `rowid(pk, slot)`, so a
conversation's rows are one range: a fork copies it, a delete drops it, neither scans."""

from __future__ import annotations

import re
from typing import Any

from tether.model import Message

INDEXED_ROLES = frozenset({"user", "assistant", "tool"})
SUMMARY_SLOT = 1 << 31  # a summary's slot is SUMMARY_SLOT + its epoch; a message's, its seq
SLOT_MASK = (1 << 32) - 1
# CJK scripts: hiragana/katakana, CJK ideographs (and extension A), Hangul, compatibility
# ideographs. Text holding any of them also goes to the trigram index.
CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def tenant_token(tenant_id: str) -> str:
    """The token an index row carries for its tenant (migration 0006 computes the same in SQL:
    't' || hex(tenant_id)), so a query matches only the tenant's rows."""
    return "t" + tenant_id.encode().hex().upper()


def rowid(conversation_pk: int, slot: int) -> int:
    return (conversation_pk << 32) | slot


def conversation_range(conversation_pk: int) -> tuple[int, int]:
    """The first and last rowid a conversation's rows can have."""
    return conversation_pk << 32, (conversation_pk << 32) | SLOT_MASK


def split(row: int) -> tuple[int, int]:
    """(conversation pk, slot) of a rowid."""
    return row >> 32, row & SLOT_MASK


def is_summary(slot: int) -> bool:
    return slot >= SUMMARY_SLOT


def content_text(content: Any) -> str | None:
    """A message content's text: the string, or a list of parts' text parts joined."""
    if isinstance(content, str):
        return content or None
    if isinstance(content, list):
        texts = [
            p["text"]
            for p in content
            if isinstance(p, dict)
            and p.get("type") in ("text", "input_text", "output_text")
            and isinstance(p.get("text"), str)
        ]
        return " ".join(texts) or None
    return None


def message_text(message: Message) -> str | None:
    """What the index holds for a message, or None (nothing to find in it)."""
    if message.role not in INDEXED_ROLES:
        return None
    return content_text(message.content)


def has_cjk(text: str) -> bool:
    return CJK.search(text) is not None
