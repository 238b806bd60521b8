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
from operator import itemgetter
from typing import Any

import orjson

from tether.model import Message

EMPTY = b"\x00" * 16
INSTRUCTION_ROLES = frozenset({"system", "developer"})
# Tether's own tool results for calls a client never answered (engine/dangling.py): stored and
# sent to the model, never part of what a client resends, so left out of the comparison.
SYNTHETIC = "tether_synthetic"
TOOL_ROUND = "tether_tool_round"  # a server tool round's message: its round number
_SORTED = orjson.OPT_SORT_KEYS
_CONTENT = itemgetter("content")


def is_history(m: Message) -> bool:
    """A message a resending client sends back: not an instruction, not Tether's own (a call
    it closed, or a server tool round, which the client never saw)."""
    if m.role in INSTRUCTION_ROLES:
        return False
    return not (m.extra and (SYNTHETIC in m.extra or TOOL_ROUND in m.extra))


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


# -- straight from the request's JSON -----------------------------------------------------------
_ROLES = frozenset({"user", "assistant", "tool"})
_NEEDS_CONTENT = frozenset({"user"})


def _raw_calls(calls: Any) -> list[Any] | None:
    """`_calls` of a raw tool_calls value, or a ValueError where the request model would
    refuse it."""
    if not isinstance(calls, list):
        raise ValueError
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict):
            raise ValueError
        call_id, name, args = c.get("id"), fn.get("name"), fn.get("arguments")
        kind = c.get("type", "function")
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(args, str)):
            raise ValueError
        if not isinstance(kind, str):
            raise ValueError
        out.append((call_id, name, arguments(args)))
    return out or None


def _raw_key(m: Any) -> bytes:
    """`key` of a raw history message, or a ValueError wherever the request model (api/models.py,
    `ChatMessage`) would refuse the message: only a valid message gets a key."""
    if not isinstance(m, dict):
        raise ValueError
    role, content = m.get("role"), m.get("content")
    if role not in _ROLES:
        raise ValueError
    if type(content) is str:
        text: Any = content or ""
    elif content is None:
        if role in _NEEDS_CONTENT:
            raise ValueError
        text = ""
    elif isinstance(content, list) and all(isinstance(p, dict) for p in content):
        text = _content(content)
    else:
        raise ValueError
    name = m.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError
    calls = m.get("tool_calls")
    parsed = None if calls is None else _raw_calls(calls)
    call_id = m.get("tool_call_id")
    if call_id is not None and not isinstance(call_id, str):
        raise ValueError
    if role == "tool" and not call_id:
        raise ValueError
    if role == "assistant" and content is None and not parsed:
        raise ValueError
    return orjson.dumps((role, text, parsed, call_id or None))


def raw_prefix_hashes(raw: Sequence[Any], roles: Sequence[str | None]) -> list[bytes] | None:
    """`prefix_hashes` of a request's history messages, from their JSON (`roles` as
    engine/incoming.py reads them); None if any of them is not a valid message, so the caller
    parses them all and reports the error."""
    h = EMPTY
    out = [h]
    try:
        for m, role in zip(raw, roles, strict=True):
            if role in INSTRUCTION_ROLES:
                continue
            h = blake2b(h + _raw_key(m), digest_size=16).digest()
            out.append(h)
    except (ValueError, TypeError):
        return None
    return out


NOT_PLAIN = object()  # stands for a stored message no plain request message can equal


def shapes_of(messages: Sequence[Message]) -> tuple[list[str], list[object]]:
    """What `raw_extends_fast` compares in one go: the history messages' roles, and their
    contents where a client resending them as `{"role", "content"}` would match them exactly
    (`NOT_PLAIN` for any other)."""
    history = [m for m in messages if is_history(m)]
    plain = [
        m.content
        if type(m.content) is str and m.content and not m.tool_calls and m.tool_call_id is None
        else NOT_PLAIN
        for m in history
    ]
    return [m.role for m in history], plain


def raw_extends_fast(
    raw: Sequence[Any],
    roles: Sequence[str | None],
    shapes: tuple[list[str], list[object]],
    stored: Sequence[Message],
) -> bool:
    """`raw_extends` against the `stored` transcript, first as list comparisons in C of the
    request's roles (`roles`, as engine/incoming.py read them), contents and message sizes with
    the transcript's `shapes` — a client resending plain messages matches at ~0.1 µs a message
    — then message by message where that is not enough."""
    stored_roles, stored_contents = shapes
    n = len(stored_roles)
    start = 0
    while start < len(roles) and roles[start] in INSTRUCTION_ROLES:
        start += 1
    if list(roles[start : start + n]) == stored_roles:
        window = raw[start : start + n]
        try:
            if list(map(_CONTENT, window)) == stored_contents and set(map(len, window)) <= {2}:
                return True
        except (KeyError, TypeError, IndexError):  # not a plain message: the slow way
            pass
    return raw_extends(raw, [m for m in stored if is_history(m)])


def raw_extends(raw: Sequence[Any], history: Sequence[Message]) -> bool:
    """Whether the request's history (raw JSON messages, instructions skipped) starts with
    exactly `history` (a stored transcript's history messages), by meaning. A plain
    `{"role", "content"}` message equal to its stored one is taken at once (the common case:
    ~0.1 µs instead of a key and a hash); any other is compared by its key, which also refuses
    an invalid message."""
    n = len(history)
    j = 0
    for m in raw:
        if j == n:
            break
        if not isinstance(m, dict):
            return False
        role = m.get("role")
        if role in INSTRUCTION_ROLES:
            continue
        stored = history[j]
        content = m.get("content")
        plain = len(m) == 2 and type(content) is str and stored.tool_calls is None
        if not (plain and role == stored.role and content == stored.content and content):
            try:
                if _raw_key(m) != key(stored):
                    return False
            except (ValueError, TypeError):
                return False
        j += 1
    return j == n
