"""The Chat Completions message shape: how the upstream (and the REST routes) carry a message."""

from __future__ import annotations

from typing import Any

from tether.model import Message


def chat_message(m: Message) -> dict[str, Any]:
    """The message as the OpenAI API carries it (a new dict each time: keeping it on the
    message cost ~5 MiB of peak RSS under the benchmark's JSON load, measured). Extra fields
    a client sent come first, so they never override the message's own."""
    out: dict[str, Any] = dict(m.extra) if m.extra else {}
    out["role"] = m.role
    out["content"] = m.content
    if m.tool_calls:
        out["tool_calls"] = m.tool_calls
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out
