"""PostgreSQL: an FTS5 expression (already accepted by FTS5 itself: sqlite_search.check) parsed
and compiled into a condition on `search_rows s`. Phrases (`"a b"`, barewords, `a + b`), prefix
phrases (`a*`), AND (written or implicit), OR, NOT, parentheses; NEAR(…) is taken as AND of its
phrases, `^` and column filters are ignored (the index has one column). Words: a tsquery on the
`simple` configuration, tokenized by PostgreSQL as the indexed text is. CJK: each phrase a
case-insensitive substring (ILIKE, which the pg_trgm index serves), as FTS5's trigram index
matches."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TOKEN = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([()*+^:,{}-])|([^\s"()*+^:,{}-]+))')


@dataclass(frozen=True, slots=True, kw_only=True)
class Term:
    text: str
    prefix: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    op: str  # and | or | not (left AND NOT right)
    left: Node
    right: Node


Node = Term | Op


def tokens(match: str) -> list[tuple[str, str]]:
    """(kind, text) of each token: kind is `s` (a string), `p` (punctuation) or `w` (a word)."""
    found: list[tuple[str, str]] = []
    pos = 0
    while pos < len(match):
        m = TOKEN.match(match, pos)
        if m is None or m.end() == pos:
            break  # trailing whitespace
        pos = m.end()
        if m.group(1) is not None:
            found.append(("s", m.group(1).replace('""', '"')))
        elif m.group(2) is not None:
            found.append(("p", m.group(2)))
        else:
            found.append(("w", m.group(3)))
    return found


class _Parser:
    def __init__(self, match: str) -> None:
        self.toks = tokens(match)
        self.at = 0

    def peek(self, ahead: int = 0) -> tuple[str, str] | None:
        i = self.at + ahead
        return self.toks[i] if i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.at]
        self.at += 1
        return tok

    def is_op(self, name: str) -> bool:
        return self.peek() == ("w", name)

    def parse_or(self) -> Node:
        left = self.parse_and()
        while self.is_op("OR"):
            self.take()
            left = Op(op="or", left=left, right=self.parse_and())
        return left

    def starts_primary(self) -> bool:
        tok = self.peek()
        if tok is None or tok == ("p", ")") or tok in (("w", "OR"), ("w", "NOT")):
            return False
        return tok[0] != "p" or tok[1] in "(^{-"

    def parse_and(self) -> Node:
        left = self.parse_not()
        while True:
            if self.is_op("AND"):
                self.take()
            elif not self.starts_primary():
                return left
            at = self.at
            left = Op(op="and", left=left, right=self.parse_not())
            if self.at == at:  # nothing FTS5 accepted here: never loop on it
                return left

    def parse_not(self) -> Node:
        left = self.parse_primary()
        while self.is_op("NOT"):
            self.take()
            left = Op(op="not", left=left, right=self.parse_primary())
        return left

    def parse_primary(self) -> Node:
        self.skip_column_filter()
        tok = self.peek()
        if tok == ("p", "("):
            self.take()
            inner = self.parse_or()
            if self.peek() == ("p", ")"):
                self.take()
            return inner
        if tok == ("w", "NEAR") and self.peek(1) == ("p", "("):
            return self.parse_near()
        if tok == ("p", "^"):
            self.take()
        return self.parse_phrase()

    def skip_column_filter(self) -> None:
        if self.peek() == ("p", "-"):
            self.take()
        if self.peek() == ("p", "{"):
            while self.peek() not in (None, ("p", "}")):
                self.take()
            if self.peek() is not None:
                self.take()
            if self.peek() == ("p", ":"):
                self.take()
        elif self.peek(1) == ("p", ":") and (self.peek() or ("", ""))[0] == "w":
            self.take()
            self.take()

    def parse_near(self) -> Node:
        self.take()
        self.take()  # NEAR (
        phrases: list[Node] = []
        while self.peek() not in (None, ("p", ")"), ("p", ",")):
            phrases.append(self.parse_phrase())
        while self.peek() not in (None, ("p", ")")):
            self.take()  # , N
        if self.peek() is not None:
            self.take()
        node = phrases[0] if phrases else Term(text="")
        for other in phrases[1:]:
            node = Op(op="and", left=node, right=other)
        return node

    def parse_phrase(self) -> Node:
        parts: list[str] = []
        prefix = False
        while True:
            tok = self.peek()
            if tok is None or tok[0] == "p":
                break
            parts.append(self.take()[1])
            prefix = self.peek() == ("p", "*")
            if prefix:
                self.take()
            if self.peek() != ("p", "+"):
                break
            self.take()
        return Term(text=" ".join(parts), prefix=prefix)


def parse(match: str) -> Node:
    return _Parser(match).parse_or()


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def compile_match(match: str, cjk: bool, params: list[Any]) -> str:
    """The SQL condition on `s` for an FTS5 expression; its values appended to `params`."""
    node = parse(match)
    if cjk:
        return _substrings(node, params)
    return f"s.words @@ {_tsquery(node, params)}"


def _tsquery(node: Node, params: list[Any]) -> str:
    if isinstance(node, Op):
        left, right = _tsquery(node.left, params), _tsquery(node.right, params)
        joined = {"and": "&&", "or": "||", "not": "&& !!"}[node.op]
        return f"({left} {joined} {right})"
    words = re.findall(r"[^\W_]+", node.text.lower())  # as tether_fold splits them
    if node.prefix and words:
        params.append(" <-> ".join(f"'{w}'" for w in words) + ":*")
        return f"to_tsquery('simple', tether_unaccent(${len(params)}))"
    params.append(node.text)
    return f"tether_phrase(${len(params)})"


def _substrings(node: Node, params: list[Any]) -> str:
    if isinstance(node, Op):
        left, right = _substrings(node.left, params), _substrings(node.right, params)
        joined = {"and": "AND", "or": "OR", "not": "AND NOT"}[node.op]
        return f"({left} {joined} {right})"
    params.append("%" + like_escape(node.text) + "%")
    return f"s.body ILIKE ${len(params)}"
