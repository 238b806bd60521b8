"""Ranking a search's hits by their own text, for every store: how often the query's words
occur (the exact phrase of a plain query counting ten times), for the text's length. No
corpus statistics: FTS5's bm25 reads every row holding a term to weigh it (the tenant token
is in all of them: ~60 ms a query at 1,000,000 texts, measured), and across tenants it would
let one tenant learn what the others' texts hold."""

from __future__ import annotations

import re

from tether.store.errors import QueryError

OPERATORS = frozenset({"AND", "OR", "NOT", "NEAR"})
PHRASE_WEIGHT = 10
BOOSTED = re.compile(r'("[^"]*") OR \((.*)\)')  # engine/search.py's `"a b" OR ("a" "b")`


def terms(match: str) -> list[tuple[str, bool]]:
    """(text, prefix) of every phrase and word of an FTS5 expression; operators ignored."""
    if match.count('"') % 2:
        raise QueryError("the search query is malformed: unterminated string")
    found: list[tuple[str, bool]] = []
    for phrase, word in re.findall(r'"([^"]*)"|([^\s"()]+)', match):
        text = phrase or word
        if text and text not in OPERATORS and not text.startswith("NEAR("):
            found.append((text.rstrip("*"), text.endswith("*")))
    return found


def count(text: str, term: str, prefix: bool, cjk: bool) -> int:
    """Occurrences of `term` in `text`, any case: as a substring in CJK text, else at word
    boundaries (a prefix term: at a word's start)."""
    lowered, term = text.lower(), term.lower()
    if cjk:
        return lowered.count(term)
    tail = "" if prefix else r"(?!\w)"
    return len(re.findall(r"(?<!\w)" + re.escape(term) + tail, lowered))


def relevance(text: str, match: str, cjk: bool, like: list[str] | None = None) -> float:
    """Higher is better; 0 for a text whose match the words do not show (an FTS5 NEAR, a
    folded accent): still a hit, ranked last."""
    boost = BOOSTED.fullmatch(match)
    words = terms(boost.group(2) if boost else match) + [(w, True) for w in like or ()]
    hits = sum(count(text, t, p, cjk) for t, p in words)
    if boost:
        hits += PHRASE_WEIGHT * sum(count(text, t, p, cjk) for t, p in terms(boost.group(1)))
    return hits / (1.0 + len(text) / 500.0)
