"""Search across a tenant's transcripts: the query a person types becomes the store's
full-text query. Plain words must all occur, and the exact phrase ranks first; a query using
FTS5 syntax (quotes, `*` for a prefix, parentheses, AND/OR/NOT/NEAR in capitals) is passed as
written, and one the index rejects is a 400 saying why. Text with CJK characters is searched on
the trigram index, where a word is any run of at least three characters (shorter ones are
matched as substrings)."""

from __future__ import annotations

import re

from tether.engine.service import Engine
from tether.errors import TetherError
from tether.store.base import ConversationFilter, SearchHit, SearchQuery, Store
from tether.store.errors import QueryError
from tether.store.indexing import has_cjk
from tether.tools.base import ToolOutput

MAX_QUERY_CHARS = 512
# what makes a query FTS5 syntax (then passed as written); `:` and `^` are not taken as
# syntax: in text a person types ("error: refused") they are punctuation
SYNTAX = re.compile(r'["*()]|\b(AND|OR|NOT|NEAR)\b')
WORD = re.compile(r"\w+")


def _quoted(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def build(q: str, *, group: bool, limit: int, filters: ConversationFilter | None) -> SearchQuery:
    text = q.strip()
    if not text:
        raise TetherError(400, "invalid_request", "q: give something to search for", param="q")
    if len(text) > MAX_QUERY_CHARS:
        raise TetherError(
            400, "invalid_request", f"q: at most {MAX_QUERY_CHARS} characters", param="q"
        )
    cjk = has_cjk(text)
    if SYNTAX.search(text):  # the caller wrote FTS5 syntax: theirs to get right
        return SearchQuery(match=text, cjk=cjk, group=group, limit=limit, filters=filters)
    words = WORD.findall(text)
    if not words:  # punctuation only: nothing any text could match
        return SearchQuery(match="", cjk=False, group=group, limit=0, filters=filters)
    like: list[str] = []
    if cjk:  # trigrams: a word under three characters cannot be looked up, only scanned for
        like = [w for w in words if len(w) < 3]
        words = [w for w in words if len(w) >= 3]
    terms = " ".join(_quoted(w) for w in words)
    match = terms
    if len(words) > 1:  # every word, and the exact phrase ranks above the words apart
        match = f"{_quoted(' '.join(words))} OR ({terms})"
    return SearchQuery(
        match=match, cjk=cjk, like=like or None, group=group, limit=limit, filters=filters
    )


async def search(
    engine: Engine,
    tenant_id: str,
    q: str,
    *,
    group: bool = True,
    limit: int = 20,
    filters: ConversationFilter | None = None,
) -> list[SearchHit]:
    query = build(q, group=group, limit=limit, filters=filters)
    if query.limit == 0:
        return []
    try:
        return await engine.store.search(tenant_id, query)
    except QueryError as exc:
        raise TetherError(400, "invalid_query", str(exc), param="q") from exc


async def tool_search(store: Store, tenant_id: str, q: str, limit: int) -> ToolOutput:
    """The `conversation_search` tool: the tenant's best hits as text the model reads."""
    try:
        query = build(q, group=False, limit=limit, filters=None)
        hits = await store.search(tenant_id, query) if query.limit else []
    except (TetherError, QueryError) as exc:
        return ToolOutput(text=f"error: {getattr(exc, 'message', exc)}", error=True)
    if not hits:
        return ToolOutput(text=f"no stored message matches {q!r}")
    lines = [f"{len(hits)} hit(s) for {q!r}, best first:"]
    for h in hits:
        where = f"summary of messages 1-{h.seq}" if h.kind == "summary" else f"{h.role} #{h.seq}"
        lines.append(f"- conversation {h.conversation_id} ({h.title or 'untitled'}), {where}: "
                     f"{h.snippet}")  # fmt: skip
    return ToolOutput(text="\n".join(lines))
