"""What a message means, as a resending client preserves it, and a hash chain over a transcript.

Clients that resend the whole history re-encode it: tool-call arguments come back with other
whitespace or key order (langchain-openai and llm add spaces, pydantic-ai removes them), content
comes back as a string or as one text part, an absent optional field as null. None of that is a
change. `key` is a message's meaning: role, text (or the parts, canonically), tool calls (id,
name, arguments as parsed JSON) and the tool-call id it answers; names and extra fields are
ignored. Two messages are the same message when their keys are equal.

`chain` folds keys into a transcript hash: `h(k) = blake2b(h(k-1) + key(m_k))`, starting from
`EMPTY`. A conversation stores the hash of its transcript (instructions and Tether's own
synthetic tool results left out), so a full-history request is recognised as extending it by
hashing the request's messages, one index probe instead of reading the transcript.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import blake2b
from typing import Any

import orjson

from tether.store.base import Message

EMPTY = b"\x00" * 16
INSTRUCTION_ROLES = frozenset({"system", "developer"})
# Tether's own tool results for calls a client never answered (engine/dangling.py): stored and
# sent to the model, never part of what a client resends, so left out of the comparison.
SYNTHETIC = "tether_synthetic"
_SORTED = orjson.OPT_SORT_KEYS


def is_history(m: Message) -> bool:
    """A message a resending client sends back: not an instruction, not Tether's own."""
    return m.role not in INSTRUCTION_ROLES and not (m.extra and SYNTHETIC in m.extra)


def text_of(content: Any) -> str:
    """Text of a content value: a string, or the text parts of a parts list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)


def _content(content: Any) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        if all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            return text_of(content)
        return orjson.dumps(content, option=_SORTED).decode()
    return str(content)


def arguments(raw: Any) -> Any:
    """Tool-call arguments as their meaning: parsed JSON re-encoded canonically (keys sorted, no
    whitespace), or the text itself where it is not JSON."""
    if not isinstance(raw, str):
        return orjson.dumps(raw, option=_SORTED).decode()
    try:
        return orjson.dumps(orjson.loads(raw), option=_SORTED).decode()
    except orjson.JSONDecodeError:
        return raw


def _calls(calls: list[dict[str, Any]] | None) -> list[Any] | None:
    if not calls:
        return None
    out = []
    for c in calls:
        fn = c.get("function") or {}
        out.append((str(c.get("id")), str(fn.get("name")), arguments(fn.get("arguments"))))
    return out


def key(m: Message) -> bytes:
    """The message's meaning, as bytes."""
    return orjson.dumps((m.role, _content(m.content), _calls(m.tool_calls), m.tool_call_id or None))


def same_message(a: Message, b: Message) -> bool:
    if a.role != b.role or (a.tool_call_id or None) != (b.tool_call_id or None):
        return False
    if a.content != b.content and _content(a.content) != _content(b.content):
        return False
    if a.tool_calls == b.tool_calls:
        return True
    return _calls(a.tool_calls) == _calls(b.tool_calls)


def chain(previous: bytes, messages: Iterable[Message]) -> bytes:
    """`previous` extended by the history messages among `messages`."""
    h = previous
    for m in messages:
        if is_history(m):
            h = blake2b(h + key(m), digest_size=16).digest()
    return h


def prefix_hashes(history: Sequence[Message]) -> list[bytes]:
    """hashes[k] is the hash of history[:k] (hashes[0] is EMPTY); `history` holds history
    messages only (see `is_history`)."""
    out = [EMPTY]
    h = EMPTY
    for m in history:
        h = blake2b(h + key(m), digest_size=16).digest()
        out.append(h)
    return out
