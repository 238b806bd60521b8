"""The SQLite store's search index (FTS5, migration 0006): keeping it in step with the messages
and summaries a transaction writes, and answering a query. `search_words` holds every indexed
text (unicode61: words, diacritics folded); `search_cjk` the texts with CJK characters
(trigrams). Rows are keyed by store/indexing.py's rowid, so a conversation's are one range."""

from __future__ import annotations

import re
import sqlite3
import threading
from typing import Any

from tether.model import Message
from tether.store import indexing
from tether.store.base import ConversationFilter, SearchHit, SearchQuery
from tether.store.errors import QueryError
from tether.store.ranking import relevance

TABLES = ("search_words", "search_cjk")
START, END = "\x02", "\x03"  # snippet() marks around a match, found and removed again
SNIPPET_TOKENS = 16  # words; a trigram index counts characters: 4× as many
# a query ranks only its newest RANK_WINDOW matching texts: a word in more texts than that finds
# its hits among the newest (ranking all 540,000 texts holding a frequent word with bm25 took
# ~0.6 s; bench/README.md, issue 16)
RANK_WINDOW = 1000


def _token(c: sqlite3.Connection, conversation_pk: int) -> str:
    row = c.execute("SELECT tenant_id FROM conversations WHERE pk = ?", (conversation_pk,))
    found = row.fetchone()
    return indexing.tenant_token(str(found[0]) if found else "")


def index_messages(
    c: sqlite3.Connection, conversation_pk: int, first_seq: int, messages: list[Message]
) -> None:
    token = _token(c, conversation_pk)
    words: list[tuple[int, str, str]] = []
    cjk: list[tuple[int, str, str]] = []
    for offset, m in enumerate(messages):
        text = indexing.message_text(m)
        if text is None:
            continue
        row = (indexing.rowid(conversation_pk, first_seq + offset), text, token)
        words.append(row)
        if indexing.has_cjk(text):
            cjk.append(row)
    if words:
        c.executemany("INSERT INTO search_words (rowid, body, tenant) VALUES (?, ?, ?)", words)
    if cjk:
        c.executemany("INSERT INTO search_cjk (rowid, body, tenant) VALUES (?, ?, ?)", cjk)


def index_summary(c: sqlite3.Connection, conversation_pk: int, epoch: int, summary: str) -> None:
    if not summary:
        return
    slot = indexing.rowid(conversation_pk, indexing.SUMMARY_SLOT + epoch)
    row = (slot, summary, _token(c, conversation_pk))
    c.execute("INSERT INTO search_words (rowid, body, tenant) VALUES (?, ?, ?)", row)
    if indexing.has_cjk(summary):
        c.execute("INSERT INTO search_cjk (rowid, body, tenant) VALUES (?, ?, ?)", row)


def copy_messages(c: sqlite3.Connection, from_pk: int, to_pk: int, through_seq: int) -> None:
    """A fork's copied prefix: the parent's message rows 1..through_seq, re-keyed (a fork is
    in its parent's tenant: the tenant token is the same)."""
    low = indexing.rowid(from_pk, 1)
    high = indexing.rowid(from_pk, through_seq)
    for table in TABLES:
        c.execute(
            f"INSERT INTO {table} (rowid, body, tenant) SELECT ? | (rowid & ?), body, tenant "
            f"FROM {table} WHERE rowid BETWEEN ? AND ?",
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


def rewrite(c: sqlite3.Connection) -> None:
    """Rewrite both indexes whole ('optimize'): FTS5 keeps a deleted row's terms in its segments
    until they merge, and a term can be a whole unspaced run of CJK text or a long token, so
    only a rewrite (with secure_delete on) takes a deleted conversation's text out of the file."""
    for table in TABLES:
        c.execute(f"INSERT INTO {table} ({table}) VALUES ('optimize')")


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
    for key, value in (filters.metadata or {}).items():  # any key: no JSON path to escape
        parts.append(
            f"EXISTS (SELECT 1 FROM json_each({alias}.metadata) m WHERE m.key = ? AND m.value = ?)"
        )
        params.extend([key, value])
    return "".join(" AND " + p for p in parts), params


def search(c: sqlite3.Connection, tenant_id: str, query: SearchQuery) -> list[SearchHit]:
    """The tenant's newest RANK_WINDOW texts that match (its token ANDed into the MATCH, read
    inside the index; the filters applied), ranked by their own text (store/ranking.py)."""
    table = "search_cjk" if query.cjk else "search_words"
    where, params = filter_sql(query.filters)
    own = f'tenant : "{indexing.tenant_token(tenant_id)}"'
    match = f"{own} AND ({query.match})" if query.match else own
    likes = "".join(f" AND instr({table}.body, ?) > 0" for _ in query.like or ())
    joined = f" JOIN conversations c ON c.pk = ({table}.rowid >> 32)" if where else ""
    window = (
        f"SELECT {table}.rowid, {table}.body FROM {table}{joined} "
        f"WHERE {table} MATCH ?{likes}{where} ORDER BY {table}.rowid DESC LIMIT {RANK_WINDOW}"
    )
    if query.match:
        check(query.match, query.cjk)
    c.execute("BEGIN")  # one snapshot for the window and the hits (a delete may land between)
    try:
        found = c.execute(window, [match, *(query.like or ()), *params]).fetchall()
        hits = [_hit(c, table, query, row, score) for row, score in _ranked(found, query)]
    finally:
        c.execute("ROLLBACK")
    return [h for h in hits if h is not None]


def _ranked(found: list[tuple[int, str]], query: SearchQuery) -> list[tuple[int, float]]:
    """(rowid, score: lower is better) of the best `limit` rows, newest first among equals;
    grouped, each conversation's best only."""
    scored = [
        (row, -relevance(str(body), query.match, query.cjk, query.like)) for row, body in found
    ]
    scored.sort(key=lambda pair: pair[1])  # stable: the window is newest first
    if not query.group:
        return scored[: query.limit]
    best: dict[int, tuple[int, float]] = {}
    for row, score in scored:
        best.setdefault(row >> 32, (row, score))
        if len(best) == query.limit:
            break
    return list(best.values())


_probes = threading.local()


def check(match: str, cjk: bool) -> None:
    """QueryError if FTS5 rejects `match`: tried on an empty in-memory index first, so that
    only the query's own faults (not the database's) become the caller's 400."""
    probe: sqlite3.Connection | None = getattr(_probes, "conn", None)
    if probe is None:
        probe = _probes.conn = sqlite3.connect(":memory:", check_same_thread=False)
        probe.execute("CREATE VIRTUAL TABLE w USING fts5(body)")
        probe.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize = 'trigram')")
    try:
        probe.execute(f"SELECT rowid FROM {'t' if cjk else 'w'} WHERE body MATCH ?", (match,))
    except sqlite3.OperationalError as exc:
        reason = str(exc).removeprefix("fts5: ")
        raise QueryError(f"the search query is malformed: {reason}") from None


def _hit(
    c: sqlite3.Connection, table: str, query: SearchQuery, row: int, score: float
) -> SearchHit | None:
    """The hit at index row `row`, or None if what it points at is gone (an index row whose
    message no longer exists is skipped, never a 500)."""
    pk, slot = indexing.split(row)
    if query.match:
        found = c.execute(
            f"SELECT snippet({table}, 0, ?, ?, '…', ?) FROM {table} "
            f"WHERE {table} MATCH ? AND rowid = ?",
            (START, END, SNIPPET_TOKENS * (4 if query.cjk else 1), query.match, row),
        ).fetchone()
    else:
        found = c.execute(f"SELECT body FROM {table} WHERE rowid = ?", (row,)).fetchone()
        found = None if found is None else (mark(str(found[0]), query.like or []),)
    conv = c.execute("SELECT id, title FROM conversations WHERE pk = ?", (pk,)).fetchone()
    summary = indexing.is_summary(slot)
    epoch = slot - indexing.SUMMARY_SLOT if summary else None
    where = (
        c.execute(
            "SELECT covers_through_seq, created_at, NULL FROM checkpoints "
            "WHERE conversation_pk = ? AND epoch = ?",
            (pk, epoch),
        )
        if summary
        else c.execute(
            "SELECT seq, created_at, role FROM messages WHERE conversation_pk = ? AND seq = ?",
            (pk, slot),
        )
    ).fetchone()
    if found is None or conv is None or where is None:
        return None
    marked = str(found[0])
    if query.match and query.like:  # the short CJK words, matched by instr, marked too
        marked = _mark_words(marked, query.like)
    snippet, highlights = unmark(marked)
    seq, at, role = where
    return SearchHit(
        conversation_id=conv[0], title=conv[1], kind="summary" if summary else "message",
        seq=seq, epoch=epoch, role=role, snippet=snippet, highlights=highlights, score=score,
        created_at=at,
    )  # fmt: skip


def _mark_words(text: str, words: list[str]) -> str:
    for word in words:
        text = re.sub(re.escape(word), lambda m: START + m.group(0) + END, text, flags=re.I)
    return text


def mark(body: str, words: list[str], width: int = 120) -> str:
    """A snippet of `body` around the first word's first occurrence, every word marked
    (case-insensitive): for hits found without FTS5's snippet()."""
    at = max(0, body.lower().find(words[0].lower())) if words else 0
    start = max(0, at - width // 2)
    text = _mark_words(body[start : start + width], words)
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
