"""The in-memory store's conversation management (listing, update, delete, fork, import,
aliases, turns) and a plain search: the same results as the SQLite store for the queries
engine/search.py builds from plain words and phrases (every term present, words matched at word
starts, CJK as substrings), ranked as the SQLite store ranks (store/ranking.py)."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

from tether.model import REMOVED, Checkpoint, Conversation, Turn
from tether.store import indexing
from tether.store.base import ConversationFilter, ImportedConversation, SearchHit, SearchQuery
from tether.store.errors import ConflictError
from tether.store.memory_db import MemoryDatabase, _checkpoint, _json, _message, _turn
from tether.store.ranking import count, relevance, terms
from tether.store.sqlite_search import mark, unmark


def _matches(db: MemoryDatabase, conv: Conversation, f: ConversationFilter | None) -> bool:
    if f is None:
        return True
    if f.title and f.title.lower() not in (conv.title or "").lower():
        return False
    if f.model and conv.model != f.model:
        return False
    if f.created_after is not None and not conv.created_at > f.created_after:
        return False
    if f.created_before is not None and not conv.created_at < f.created_before:
        return False
    if f.forked_from:
        parent = db.by_id.get((conv.tenant_id, f.forked_from))
        if parent is None or conv.forked_from_pk != parent:
            return False
    return all((conv.metadata or {}).get(k) == v for k, v in (f.metadata or {}).items())


def list_conversations(
    db: MemoryDatabase,
    tenant_id: str,
    limit: int,
    after: Conversation | None,
    filters: ConversationFilter | None,
) -> list[Conversation]:
    mine = [
        c for c in db.conversations.values()
        if c.tenant_id == tenant_id and _matches(db, c, filters)
    ]  # fmt: skip
    mine.sort(key=lambda c: (c.updated_at, c.pk), reverse=True)
    if after is not None:
        mine = [c for c in mine if (c.updated_at, c.pk) < (after.updated_at, after.pk)]
    return mine[: max(0, limit)]


def get(db: MemoryDatabase, pk: int) -> Conversation:
    conv = db.conversations.get(pk)
    if conv is None:
        raise ConflictError(f"conversation {pk} does not exist")
    return conv


def update(
    db: MemoryDatabase,
    pk: int,
    title: str | None,
    clear_title: bool,
    metadata: dict[str, str] | None,
    expected_last_seq: int | None,
) -> Conversation:
    conv = get(db, pk)
    if expected_last_seq is not None and conv.last_seq != expected_last_seq:
        raise ConflictError(
            f"conversation moved on: last seq {conv.last_seq}, expected {expected_last_seq}"
        )
    if title is not None or clear_title:
        conv = replace(conv, title=title)
    if metadata is not None:
        conv = replace(conv, metadata=_json(metadata) or None)
    db.conversations[pk] = conv
    return conv


def remove(db: MemoryDatabase, pk: int, seqs: list[int], at: float) -> int:
    conv, wanted, marked = get(db, pk), set(seqs), 0
    stored = db.messages.get(pk, [])
    for i, m in enumerate(stored):
        if m.seq in wanted and not m.removed:
            stored[i] = replace(m, extra={**(m.extra or {}), REMOVED: at})
            marked += 1
    if marked:
        db.conversations[pk] = replace(conv, updated_at=at)
    return marked


def delete(db: MemoryDatabase, pk: int) -> dict[str, int]:
    conv = get(db, pk)
    turn_ids = {tid for tid, r in db.turns.items() if r.conversation_pk == pk}
    removed = {
        "messages": len(db.messages.pop(pk, [])),
        "checkpoints": len(db.checkpoints.pop(pk, [])),
        "turns": len(turn_ids),
        "tool_steps": sum(1 for k in db.tool_steps if k[0] in turn_ids),
        "idempotency_keys": sum(1 for c in db.claims.values() if c.conversation_pk == pk),
        "conversation_aliases": sum(1 for v in db.aliases.values() if v == pk),
        "conversations": 1,
    }
    for tid in turn_ids:
        del db.turns[tid]
    db.tool_steps = {k: v for k, v in db.tool_steps.items() if k[0] not in turn_ids}
    db.claims = {k: v for k, v in db.claims.items() if v.conversation_pk != pk}
    db.aliases = {k: v for k, v in db.aliases.items() if v != pk}
    del db.by_id[(conv.tenant_id, conv.id)]
    del db.conversations[pk]
    for other in list(db.conversations.values()):
        if other.forked_from_pk == pk:
            db.conversations[other.pk] = replace(other, forked_from_pk=None, forked_from_id=None)
    return removed


def _new(
    db: MemoryDatabase, tenant_id: str, conv_id: str, template: Conversation, at: float
) -> Conversation:
    if (tenant_id, conv_id) in db.by_id or (tenant_id, conv_id) in db.aliases:
        raise ConflictError(f"conversation {conv_id!r} already exists")
    db.last_pk += 1
    conv = replace(template, pk=db.last_pk, id=conv_id, tenant_id=tenant_id)
    db.tenants.setdefault(tenant_id, at)
    db.by_id[(tenant_id, conv_id)] = conv.pk
    db.conversations[conv.pk] = conv
    return conv


def fork(db: MemoryDatabase, tenant_id: str, pk: int, at_seq: int, new_id: str) -> Conversation:
    parent = get(db, pk)
    if not 1 <= at_seq <= parent.last_seq:
        raise ConflictError(f"cannot fork at seq {at_seq}: the conversation has {parent.last_seq}")
    now = time.time()
    within = [
        cp for cp in db.checkpoints.get(pk, [])
        if max(cp.covers_through_seq, cp.prune_through_seq) <= at_seq
    ]  # fmt: skip
    template = replace(
        parent, last_seq=at_seq, turn_count=0, epoch=1 if within else 0, usage_prompt_tokens=None,
        usage_through_seq=None, usage_epoch=None, forked_from_id=parent.id,
        forked_from_seq=at_seq, forked_from_pk=pk, created_at=now, updated_at=now,
        history_hash=None, history_len=None,
    )  # fmt: skip
    conv = _new(db, tenant_id, new_id, template, now)
    db.messages[conv.pk] = [_message(m) for m in db.messages[pk][:at_seq]]
    if within:
        db.checkpoints[conv.pk] = [_checkpoint(within[-1], epoch=1)]
    return conv


def import_conversation(
    db: MemoryDatabase, tenant_id: str, imported: ImportedConversation
) -> Conversation | None:
    names = (imported.id, *imported.aliases)
    if any((tenant_id, n) in db.by_id or (tenant_id, n) in db.aliases for n in names):
        return None
    parent_pk = db.by_id.get((tenant_id, imported.forked_from or "")) or db.aliases.get(
        (tenant_id, imported.forked_from or "")
    )
    parent = db.conversations.get(parent_pk) if parent_pk else None
    n = len(imported.messages)
    template = Conversation(
        pk=0, id=imported.id, tenant_id=tenant_id, title=imported.title, model=imported.model,
        system_prompt=imported.system_prompt, last_seq=n, turn_count=0,
        epoch=len(imported.checkpoints), usage_prompt_tokens=None, usage_through_seq=None,
        usage_epoch=None, forked_from_id=parent.id if parent else None,
        forked_from_seq=imported.forked_from_seq if parent else None,
        created_at=imported.created_at, updated_at=imported.updated_at,
        forked_from_pk=parent.pk if parent else None, metadata=_json(imported.metadata) or None,
    )  # fmt: skip
    conv = _new(db, tenant_id, imported.id, template, imported.created_at)
    db.messages[conv.pk] = [
        _message(m, seq=seq, turn_id=None, created_at=m.created_at or imported.created_at)
        for seq, m in enumerate(imported.messages, 1)
    ]
    db.checkpoints[conv.pk] = [
        Checkpoint(
            epoch=epoch, covers_through_seq=min(cp.covers_through_seq, n),
            prune_through_seq=min(cp.covers_through_seq, n), summary=cp.summary, ledger=[],
            tokens_before=cp.tokens_before, tokens_after=cp.tokens_after, model=cp.model,
            prompt_version="import", stats={"imported": True}, created_at=cp.created_at,
        )
        for epoch, cp in enumerate(imported.checkpoints, 1)
    ]  # fmt: skip
    for alias in imported.aliases:
        db.aliases[(tenant_id, alias)] = conv.pk
    return conv


def turns(db: MemoryDatabase, pk: int, limit: int) -> list[Turn]:
    conv = get(db, pk)
    mine = [r.turn for r in db.turns.values() if r.conversation_pk == pk]
    mine.sort(key=lambda t: t.started_at, reverse=True)
    return [replace(_turn(t), conversation_id=conv.id) for t in mine[:limit]]


def counts(db: MemoryDatabase) -> dict[str, int]:
    return {
        "tenants": len(db.tenants),
        "api_keys": len(db.api_keys),
        "conversations": len(db.conversations),
        "conversation_aliases": len(db.aliases),
        "turns": len(db.turns),
        "messages": sum(len(m) for m in db.messages.values()),
        "checkpoints": sum(len(c) for c in db.checkpoints.values()),
        "idempotency_keys": len(db.claims),
        "tool_steps": len(db.tool_steps),
    }


def note_turn(db: MemoryDatabase, tenant_id: str, turn_id: str, key: str, value: Any) -> bool:
    if find_turn(db, tenant_id, turn_id) is None:
        return False
    row = db.turns[turn_id]
    notes = {**(row.turn.notes or {}), key: value}
    db.turns[turn_id] = replace(row, turn=replace(row.turn, notes=_json(notes)))
    return True


def find_turn(db: MemoryDatabase, tenant_id: str, turn_id: str) -> Turn | None:
    row = db.turns.get(turn_id)
    conv = None if row is None else db.conversations.get(row.conversation_pk)
    if row is None or conv is None or conv.tenant_id != tenant_id:
        return None
    return replace(_turn(row.turn), conversation_id=conv.id)


def _all(text: str, terms: list[tuple[str, bool]], cjk: bool) -> int:
    """How often the terms occur, if every one does (else 0)."""
    counts = [count(text, t, p, cjk) for t, p in terms]
    return sum(counts) if counts and all(counts) else 0


def _score(text: str, query: SearchQuery) -> int:
    """How often the query's terms occur (0: no match). Understood: terms (all must occur),
    `a OR b` without parentheses, and engine/search.py's `"a b" OR (a b)`, which needs the
    words and ranks the phrase."""
    like = [(w, True) for w in query.like or ()]
    boost = re.fullmatch(r'("[^"]*") OR \((.*)\)', query.match)
    if boost is None and " OR " in query.match and "(" not in query.match:
        alternatives = query.match.split(" OR ")
        return sum(_all(text, terms(a) + like, query.cjk) for a in alternatives)
    found = _all(text, terms(boost.group(2) if boost else query.match) + like, query.cjk)
    if found and boost:
        found += 10 * _all(text, terms(boost.group(1)), query.cjk)
    return found


def _documents(
    db: MemoryDatabase, conv: Conversation
) -> list[tuple[str, int, int | None, str | None, float, str]]:
    """(kind, seq, epoch, role, created_at, text) of everything indexed in a conversation."""
    docs: list[tuple[str, int, int | None, str | None, float, str]] = []
    for m in db.messages.get(conv.pk, []):
        text = indexing.message_text(m)
        if text:
            docs.append(("message", m.seq, None, m.role, m.created_at, text))
    for cp in db.checkpoints.get(conv.pk, []):
        if cp.summary:
            docs.append(("summary", cp.covers_through_seq, cp.epoch, None, cp.created_at,
                         cp.summary))  # fmt: skip
    return docs


def search(db: MemoryDatabase, tenant_id: str, query: SearchQuery) -> list[SearchHit]:
    words = [t for t, _ in terms(query.match)] + list(query.like or ())
    hits: list[SearchHit] = []
    for conv in list_conversations(db, tenant_id, 1 << 30, None, query.filters):
        for kind, seq, epoch, role, at, text in _documents(db, conv):
            if query.cjk and not indexing.has_cjk(text):
                continue
            found = _score(text, query)
            if found:
                snippet, spans = unmark(mark(text, words))
                hits.append(SearchHit(
                    conversation_id=conv.id, title=conv.title, kind=kind, seq=seq, epoch=epoch,
                    role=role, snippet=snippet, highlights=spans,
                    score=-relevance(text, query.match, query.cjk, query.like),
                    created_at=at,
                ))  # fmt: skip
    hits.sort(key=lambda h: h.score)
    if query.group:
        best: dict[str, SearchHit] = {}
        for h in hits:
            best.setdefault(h.conversation_id, h)
        hits = list(best.values())
    return hits[: query.limit]
