"""`TETHER_TITLES=auto`: after a conversation's first turn, the compaction model names it in a
few words, in the background (the turn has answered; no lock or transaction is held across the
call). Until then, and whenever this fails, the title is the first user message's start. A
title someone set meanwhile (PATCH, the dashboard) is never overwritten."""

from __future__ import annotations

import asyncio

import structlog

from tether.engine.deps import Deps
from tether.engine.merge import text_of
from tether.model import Conversation, Message

log = structlog.get_logger("tether.titles")

PROMPT = (
    "Write a title of at most six words for the conversation below, in its language. Answer "
    "with the title only: no quotes, no final period."
)
MAX_CHARS = 80
_tasks: set[asyncio.Task[None]] = set()


def title_later(deps: Deps, conv: Conversation, messages: list[Message]) -> None:
    """Start naming `conv` (just created by its first turn) if the settings ask for it."""
    if deps.settings.titles != "auto" or deps.upstream is None:
        return
    task = asyncio.create_task(_name(deps, conv, messages))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _clean(text: str) -> str | None:
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = line.strip().strip("\"'“”«»").rstrip(".").strip()
    return line[:MAX_CHARS] or None


async def _name(deps: Deps, conv: Conversation, messages: list[Message]) -> None:
    assert deps.upstream is not None
    excerpt = "\n".join(
        f"{m.role}: {text_of(m.content)[:1000]}"
        for m in messages
        if m.role in ("user", "assistant")
    )
    model = deps.settings.compaction_model or conv.model or deps.settings.default_model or ""
    body = {
        "model": model,
        "messages": [{"role": "system", "content": PROMPT}, {"role": "user", "content": excerpt}],
        "max_tokens": 24,
        "stream": False,
    }
    try:
        reply = await deps.upstream.complete(body)
        title = _clean(str(reply["choices"][0]["message"].get("content") or ""))
        current = await deps.store.resolve(conv.tenant_id, conv.id)
        if title is None or current is None or current.title != conv.title:
            return  # nothing usable, deleted, or renamed meanwhile
        await deps.store.update_conversation(conv.pk, title=title)
        log.info("conversation.titled", conversation=conv.id, title=title)
    except Exception as exc:  # the title is a nicety: the first message's start stays
        log.warning("conversation.title_failed", conversation=conv.id, error=str(exc)[:300])
