"""A conversation's whole transcript out (JSON that `tether conversations import` reads back,
or Markdown for people), checkpoints marked where they cut, and the JSON form back in."""

from __future__ import annotations

import datetime
from typing import Any

import orjson

from tether.engine.service import Engine
from tether.model import Checkpoint, Conversation, Message
from tether.store.base import ImportedCheckpoint, ImportedConversation
from tether.upstream.wire import chat_message

FORMAT = "tether.conversation.export"
VERSION = 1


async def _parts(engine: Engine, conv: Conversation) -> tuple[list[Message], list[Checkpoint]]:
    return (
        await engine.store.load_messages(conv.pk),
        await engine.store.list_checkpoints(conv.pk),
    )


async def export_json(engine: Engine, conv: Conversation) -> dict[str, Any]:
    messages, checkpoints = await _parts(engine, conv)
    forked = None
    if conv.forked_from_id:
        forked = {"conversation_id": conv.forked_from_id, "seq": conv.forked_from_seq}
    return {
        "object": FORMAT,
        "version": VERSION,
        "conversation": {
            "id": conv.id,
            "title": conv.title,
            "model": conv.model,
            "system_prompt": conv.system_prompt,
            "metadata": conv.metadata or {},
            "aliases": await engine.store.list_aliases(conv.pk),
            "forked_from": forked,
            "created_at": conv.created_at,
            "updated_at": conv.updated_at,
        },
        "messages": [
            {**chat_message(m), "seq": m.seq, "turn_id": m.turn_id, "created_at": m.created_at}
            for m in messages
        ],
        "checkpoints": [
            {
                "epoch": c.epoch,
                "covers_through_seq": c.covers_through_seq,
                "summary": c.summary,
                "tokens_before": c.tokens_before,
                "tokens_after": c.tokens_after,
                "model": c.model,
                "created_at": c.created_at,
            }
            for c in checkpoints
        ],
    }


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _text(m: Message) -> str:
    if isinstance(m.content, str):
        return m.content
    if isinstance(m.content, list):
        return "\n".join(str(p.get("text", f"[{p.get('type')}]")) for p in m.content)
    return ""


def _markdown_message(m: Message) -> list[str]:
    head = f"### {m.seq} · {m.role}" + (f" ({m.name})" if m.name else "")
    lines = [head, f"_{_when(m.created_at)}_", ""]
    if m.role == "tool":
        lines.append(f"Result of `{m.tool_call_id}`:")
        lines += ["", "```", _text(m), "```"]
    elif text := _text(m):
        lines.append(text)
    for call in m.tool_calls or []:
        fn = call.get("function") or {}
        lines += ["", f"Calls `{fn.get('name')}` (`{call.get('id')}`):", "", "```json"]
        lines += [str(fn.get("arguments", "")), "```"]
    return [*lines, ""]


def _markdown_checkpoint(c: Checkpoint) -> list[str]:
    lines = [
        f"> **Compaction, epoch {c.epoch}**: messages 1–{c.covers_through_seq} summarised, "
        f"{c.tokens_before} → {c.tokens_after} tokens ({c.model or 'unknown model'}, "
        f"{_when(c.created_at)})",
        ">",
    ]
    lines += [f"> {line}" if line else ">" for line in (c.summary or "").splitlines()]
    return [*lines, ""]


async def export_markdown(engine: Engine, conv: Conversation) -> str:
    messages, checkpoints = await _parts(engine, conv)
    after: dict[int, list[Checkpoint]] = {}
    for c in checkpoints:
        after.setdefault(c.covers_through_seq, []).append(c)
    out = [f"# {conv.title or conv.id}", ""]
    out += [f"- conversation: `{conv.id}`", f"- model: {conv.model or 'unknown'}"]
    out += [f"- messages: {conv.last_seq}", f"- created: {_when(conv.created_at)}", ""]
    if conv.system_prompt:
        out += ["## System", "", conv.system_prompt, ""]
    out += ["## Transcript", ""]
    for m in messages:
        out += _markdown_message(m)
        for c in after.get(m.seq, ()):
            out += _markdown_checkpoint(c)
    return "\n".join(out)


def _message(raw: dict[str, Any]) -> Message:
    if raw.get("role") not in ("system", "developer", "user", "assistant", "tool"):
        raise ValueError(f"message {raw.get('seq')}: unknown role {raw.get('role')!r}")
    return Message(
        role=raw["role"],
        content=raw.get("content"),
        tool_calls=raw.get("tool_calls"),
        tool_call_id=raw.get("tool_call_id"),
        name=raw.get("name"),
        created_at=float(raw.get("created_at") or 0.0),
    )


def imported(data: Any) -> ImportedConversation:
    """An export read back; ValueError saying what is wrong with a file that is not one."""
    if not isinstance(data, dict) or data.get("object") != FORMAT:
        raise ValueError(f"not a Tether conversation export (object is not {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ValueError(f"export version {data.get('version')!r}: this Tether reads {VERSION}")
    conv = data.get("conversation") or {}
    messages = [_message(m) for m in data.get("messages") or []]
    if [m.get("seq") for m in data["messages"] or []] != list(range(1, len(messages) + 1)):
        raise ValueError("messages must be in order, seq 1..n without gaps")
    forked = conv.get("forked_from") or {}
    return ImportedConversation(
        id=str(conv["id"]),
        aliases=[str(a) for a in conv.get("aliases") or []],
        title=conv.get("title"),
        model=conv.get("model"),
        system_prompt=conv.get("system_prompt"),
        metadata={str(k): str(v) for k, v in (conv.get("metadata") or {}).items()},
        created_at=float(conv.get("created_at") or 0.0),
        updated_at=float(conv.get("updated_at") or 0.0),
        messages=messages,
        checkpoints=[
            ImportedCheckpoint(
                covers_through_seq=int(c["covers_through_seq"]),
                summary=str(c.get("summary") or ""),
                created_at=float(c.get("created_at") or 0.0),
                model=c.get("model"),
                tokens_before=int(c.get("tokens_before") or 0),
                tokens_after=int(c.get("tokens_after") or 0),
            )
            for c in data.get("checkpoints") or []
        ],
        forked_from=forked.get("conversation_id"),
        forked_from_seq=forked.get("seq"),
    )


def dumps(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)
