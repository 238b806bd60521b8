"""The SQLite store's search index (FTS5, migration 0006): keeping it in step with the messages
and summaries a transaction writes, and answering a query. `search_words` holds every indexed
text (unicode61: words, diacritics folded); `search_cjk` the texts with CJK characters
(trigrams). Rows are keyed by store/indexing.py's rowid, so a conversation's are one range."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from tether.model import Message
from tether.store import indexing
from tether.store.base import ConversationFilter, SearchHit, SearchQuery
from tether.store.errors import QueryError

TABLES = ("search_words", "search_cjk")
START, END = "\x02", "\x03"  # snippet() marks around a match, found and removed again
SNIPPET_TOKENS = 16


def index_messages(
    c: sqlite3.Connection, conversation_pk: int, first_seq: int, messages: list[Message]
) -> None:
    words: list[tuple[int, str]] = []
    cjk: list[tuple[int, str]] = []
    for offset, m in enumerate(messages):
        text = indexing.message_text(m)
        if text is None:
            continue
        row = (indexing.rowid(conversation_pk, first_seq + offset), text)
        words.append(row)
        if indexing.has_cjk(text):
            cjk.append(row)
    if words:
        c.executemany("INSERT INTO search_words (rowid, body) VALUES (?, ?)", words)
    if cjk:
        c.executemany("INSERT INTO search_cjk (rowid, body) VALUES (?, ?)", cjk)


def index_summary(c: sqlite3.Connection, conversation_pk: int, epoch: int, summary: str) -> None:
    if not summary:
        return
    row = (indexing.rowid(conversation_pk, indexing.SUMMARY_SLOT + epoch), summary)
    c.execute("INSERT INTO search_words (rowid, body) VALUES (?, ?)", row)
    if indexing.has_cjk(summary):
        c.execute("INSERT INTO search_cjk (rowid, body) VALUES (?, ?)", row)


def copy_messages(c: sqlite3.Connection, from_pk: int, to_pk: int, through_seq: int) -> None:
    """A fork's copied prefix: the parent's message rows 1..through_seq, re-keyed."""
    low = indexing.rowid(from_pk, 1)
    high = indexing.rowid(from_pk, through_seq)
    for table in TABLES:
        c.execute(
            f"INSERT INTO {table} (rowid, body) SELECT ? | (rowid & ?), body FROM {table} "
            "WHERE rowid BETWEEN ? AND ?",
            (to_pk << 32, indexing.SLOT_MASK, low, high),
        )


def drop(c: sqlite3.Connection, conversation_pk: int) -> int:
    low, high = indexing.conversation_range(conversation_pk)
    removed = 0
    for table in TABLES:
        removed += c.execute(
            f"DELETE FROM {table} WHERE rowid BETWEEN ? AND ?", (low, high)
        ).rowcount
    return removed


def filter_sql(filters: ConversationFilter | None, alias: str = "c") -> tuple[str, list[Any]]:
    """` AND …` conditions on the conversations table (as `alias`) for `filters`."""
    if filters is None:
        return "", []
    parts: list[str] = []
    params: list[Any] = []
    if filters.title:
        parts.append(f"instr(lower(coalesce({alias}.title, '')), lower(?)) > 0")
        params.append(filters.title)
    if filters.model:
        parts.append(f"{alias}.model = ?")
        params.append(filters.model)
    if filters.created_after is not None:
        parts.append(f"{alias}.created_at > ?")
        params.append(filters.created_after)
    if filters.created_before is not None:
        parts.append(f"{alias}.created_at < ?")
        params.append(filters.created_before)
    if filters.forked_from:
        parts.append(
            f"{alias}.forked_from_pk = (SELECT f.pk FROM conversations f "
            f"WHERE f.tenant_id = {alias}.tenant_id AND f.id = ?)"
        )
        params.append(filters.forked_from)
    for key, value in (filters.metadata or {}).items():
        parts.append(f"json_extract({alias}.metadata, ?) = ?")
        params.extend(['$."' + key.replace('"', '""') + '"', value])
    return "".join(" AND " + p for p in parts), params


def search(c: sqlite3.Connection, tenant_id: str, query: SearchQuery) -> list[SearchHit]:
    table = "search_cjk" if query.cjk else "search_words"
    where, params = filter_sql(query.filters)
    likes = "".join(" AND instr(s.body, ?) > 0" for _ in query.like or ())
    like_params = list(query.like or ())
    if query.match:
        score, cond = f"bm25({table})", f"{table} MATCH ? AND "
        first: list[Any] = [query.match]
    else:  # only words too short for trigrams: a scan of the CJK texts, newest first
        score, cond, first = "-(s.rowid & 4294967295)", "", []
    inner = (
        f"SELECT s.rowid AS id, {score} AS score FROM {table} s "
        f"JOIN conversations c ON c.pk = (s.rowid >> 32) "
        f"WHERE {cond}c.tenant_id = ?{likes}{where}"
    )
    args = [*first, tenant_id, *like_params, *params]
    if query.group:
        statement = (
            f"SELECT id, min(score) AS best FROM ({inner}) GROUP BY id >> 32 ORDER BY best LIMIT ?"
        )
    else:
        statement = f"{inner} ORDER BY score LIMIT ?"
    try:
        rows = c.execute(statement, [*args, query.limit]).fetchall()
        return [_hit(c, table, query, int(row), float(best)) for row, best in rows]
    except sqlite3.OperationalError as exc:
        if "fts5" in str(exc) or "syntax error" in str(exc) or "no such column" in str(exc):
            raise QueryError(f"malformed search query: {exc}") from exc
        raise


def _hit(
    c: sqlite3.Connection, table: str, query: SearchQuery, row: int, score: float
) -> SearchHit:
    pk, slot = indexing.split(row)
    if query.match:
        marked = c.execute(
            f"SELECT snippet({table}, 0, ?, ?, '…', ?) FROM {table} "
            f"WHERE {table} MATCH ? AND rowid = ?",
            (START, END, SNIPPET_TOKENS, query.match, row),
        ).fetchone()[0]
    else:
        body = c.execute(f"SELECT body FROM {table} WHERE rowid = ?", (row,)).fetchone()[0]
        marked = mark(str(body), query.like or [])
    snippet, highlights = unmark(str(marked))
    conv_id, title = c.execute("SELECT id, title FROM conversations WHERE pk = ?", (pk,)).fetchone()
    if indexing.is_summary(slot):
        epoch = slot - indexing.SUMMARY_SLOT
        seq, at = c.execute(
            "SELECT covers_through_seq, created_at FROM checkpoints "
            "WHERE conversation_pk = ? AND epoch = ?",
            (pk, epoch),
        ).fetchone()
        return SearchHit(
            conversation_id=conv_id, title=title, kind="summary", seq=seq, epoch=epoch,
            role=None, snippet=snippet, highlights=highlights, score=score, created_at=at,
        )  # fmt: skip
    role, at = c.execute(
        "SELECT role, created_at FROM messages WHERE conversation_pk = ? AND seq = ?", (pk, slot)
    ).fetchone()
    return SearchHit(
        conversation_id=conv_id, title=title, kind="message", seq=slot, epoch=None, role=role,
        snippet=snippet, highlights=highlights, score=score, created_at=at,
    )  # fmt: skip


def mark(body: str, words: list[str], width: int = 120) -> str:
    """A snippet of `body` around the first word's first occurrence, every word marked
    (case-insensitive): for hits found without FTS5's snippet()."""
    at = max(0, body.lower().find(words[0].lower())) if words else 0
    start = max(0, at - width // 2)
    text = body[start : start + width]
    for word in words:
        text = re.sub(re.escape(word), lambda m: START + m.group(0) + END, text, flags=re.I)
    return ("…" if start else "") + text + ("…" if start + width < len(body) else "")


def unmark(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """The snippet without its marks, and where they were ([start, end) offsets)."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    opened: int | None = None
    for ch in marked:
        if ch == START:
            opened = len(out)
        elif ch == END:
            if opened is not None and len(out) > opened:
                spans.append((opened, len(out)))
            opened = None
        else:
            out.append(ch)
    return "".join(out), spans
