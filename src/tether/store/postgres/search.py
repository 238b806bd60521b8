"""PostgreSQL: the search index (`search_rows`, keyed by store/indexing.py's rowid) kept in step
in the transaction that writes its text, and a query answered with the semantics of the SQLite
store. The query is FTS5 syntax (engine/search.py): checked by FTS5 itself (sqlite_search.check,
so a query is malformed here exactly when it is there), then parsed (postgres/fts.py) and
compiled: words to a tsquery on the `simple` configuration (words lower-cased, never stemmed),
CJK text to substring matches (ILIKE, served by the pg_trgm index). The tenant's newest
RANK_WINDOW matching texts are ranked by store/ranking.py, as in the other stores."""

from __future__ import annotations

from typing import Any

from tether.model import Message
from tether.store import indexing
from tether.store.base import ConversationFilter, SearchHit, SearchQuery
from tether.store.postgres import fts
from tether.store.postgres.db import Conn, rowcount
from tether.store.ranking import terms
from tether.store.sqlite_search import RANK_WINDOW, _ranked, check, mark, unmark

INSERT = "INSERT INTO search_rows (rowid, tenant_id, body, cjk) "


def rows_of(
    pk: int, first_seq: int, messages: list[Message]
) -> tuple[list[int], list[str], list[bool]]:
    """The search rows of messages from `first_seq` on: rowids, texts, whether each holds CJK."""
    rows: list[int] = []
    bodies: list[str] = []
    for offset, m in enumerate(messages):
        text = indexing.message_text(m)
        if text is not None:
            rows.append(indexing.rowid(pk, first_seq + offset))
            bodies.append(text.replace("\x00", ""))  # PostgreSQL text holds no NUL
    return rows, bodies, [indexing.has_cjk(b) for b in bodies]


async def index_summary(c: Conn, pk: int, epoch: int, summary: str) -> None:
    body = summary.replace("\x00", "")
    await c.execute(
        INSERT + "SELECT $1, tenant_id, $2, $3 FROM conversations WHERE pk = $4",
        indexing.rowid(pk, indexing.SUMMARY_SLOT + epoch),
        body,
        indexing.has_cjk(body),
        pk,
    )


async def copy_messages(c: Conn, from_pk: int, to_pk: int, through_seq: int) -> None:
    """A fork's copied prefix: the parent's message rows 1..through_seq, re-keyed (a fork is in
    its parent's tenant)."""
    await c.execute(
        INSERT + "SELECT $1::bigint | (rowid & $2::bigint), tenant_id, body, cjk "
        "FROM search_rows WHERE rowid BETWEEN $3 AND $4",
        to_pk << 32,
        indexing.SLOT_MASK,
        indexing.rowid(from_pk, 1),
        indexing.rowid(from_pk, through_seq),
    )


async def drop(c: Conn, pk: int) -> int:
    low, high = indexing.conversation_range(pk)
    return rowcount(
        await c.execute("DELETE FROM search_rows WHERE rowid BETWEEN $1 AND $2", low, high)
    )


def filter_sql(filters: ConversationFilter | None, params: list[Any], alias: str = "c") -> str:
    """` AND …` conditions on the conversations table (as `alias`) for `filters`, their values
    appended to `params`."""
    if filters is None:
        return ""

    def p(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    parts: list[str] = []
    if filters.title:
        parts.append(f"strpos(lower(coalesce({alias}.title, '')), lower({p(filters.title)})) > 0")
    if filters.model:
        parts.append(f"{alias}.model = {p(filters.model)}")
    if filters.created_after is not None:
        parts.append(f"{alias}.created_at > {p(filters.created_after)}::float8")
    if filters.created_before is not None:
        parts.append(f"{alias}.created_at < {p(filters.created_before)}::float8")
    if filters.forked_from:
        parts.append(
            f"{alias}.forked_from_pk = (SELECT f.pk FROM conversations f "
            f"WHERE f.tenant_id = {alias}.tenant_id AND f.id = {p(filters.forked_from)})"
        )
    for key, value in (filters.metadata or {}).items():  # any key: ->> takes it as text
        parts.append(f"({alias}.metadata::jsonb ->> {p(key)}::text) = {p(value)}")
    return "".join(" AND " + part for part in parts)


async def search(c: Conn, tenant_id: str, query: SearchQuery) -> list[SearchHit]:
    """The tenant's newest RANK_WINDOW texts that match (the filters applied), ranked by their
    own text; run inside one snapshot (a delete may land between the window and the hits)."""
    if query.match:
        check(query.match, query.cjk)
    params: list[Any] = [tenant_id]
    cond = fts.compile_match(query.match, query.cjk, params) if query.match else "true"
    for word in query.like or ():
        params.append("%" + fts.like_escape(word) + "%")
        cond += f" AND s.body ILIKE ${len(params)}"
    if query.cjk:
        cond += " AND s.cjk"
    where = filter_sql(query.filters, params)
    joined = " JOIN conversations c ON c.pk = (s.rowid >> 32)" if where else ""
    found = await c.fetch(
        f"SELECT s.rowid, s.body FROM search_rows s{joined} WHERE s.tenant_id = $1 AND {cond}"
        f"{where} ORDER BY s.rowid DESC LIMIT {RANK_WINDOW}",
        *params,
    )
    bodies = {int(r[0]): str(r[1]) for r in found}
    ranked = _ranked([(int(r[0]), str(r[1])) for r in found], query)
    if not ranked:
        return []
    return await _hits(c, query, ranked, bodies)


async def _hits(
    c: Conn, query: SearchQuery, ranked: list[tuple[int, float]], bodies: dict[int, str]
) -> list[SearchHit]:
    """The hits at the ranked rows, in their order; a row whose message or checkpoint is gone
    is skipped, never a 500."""
    rows = await c.fetch(
        "SELECT r.rowid, c.id, c.title, coalesce(m.seq, k.covers_through_seq), "
        "coalesce(m.created_at, k.created_at), m.role, k.epoch "
        "FROM unnest($1::bigint[]) AS r(rowid) JOIN conversations c ON c.pk = r.rowid >> 32 "
        "LEFT JOIN messages m ON m.conversation_pk = c.pk AND m.seq = (r.rowid & $2::bigint) "
        "AND (r.rowid & $2::bigint) < $3::bigint "
        "LEFT JOIN checkpoints k ON k.conversation_pk = c.pk "
        "AND k.epoch = (r.rowid & $2::bigint) - $3::bigint "
        "AND (r.rowid & $2::bigint) >= $3::bigint",
        [row for row, _ in ranked],
        indexing.SLOT_MASK,
        indexing.SUMMARY_SLOT,
    )
    found = {int(r[0]): r for r in rows}
    words = [t for t, _ in terms(query.match)] + list(query.like or ())
    hits: list[SearchHit] = []
    for row, score in ranked:
        got = found.get(row)
        if got is None or got[3] is None:
            continue
        _, conv_id, title, seq, at, role, epoch = got
        marked = mark(bodies[row], words)
        snippet, highlights = unmark(marked)
        summary = indexing.is_summary(indexing.split(row)[1])
        hits.append(SearchHit(
            conversation_id=conv_id, title=title, kind="summary" if summary else "message",
            seq=seq, epoch=epoch, role=role, snippet=snippet, highlights=highlights, score=score,
            created_at=at,
        ))  # fmt: skip
    return hits
