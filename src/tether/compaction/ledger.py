"""The identifier ledger and secret redaction: deterministic, no model involved.

The ledger lists exact identifiers seen in summarised messages (URLs, paths, emails, numbers with
units, ids and hashes, quoted names). It is carried forward verbatim from checkpoint to
checkpoint, so identifiers survive any number of compactions even if a summary drops them, up to
its cap (2,000 entries; past that the oldest entries give way).

Every pattern here runs over user text, in time linear in its length: no pattern may scan to the
end of a long run from each position inside it (that was quadratic: 30 s for `"a" * 20_000`, and
the regex engine holds the GIL, so the whole server waited). Patterns start only where a run
starts (look-behinds), possessive quantifiers where giving back cannot help, bounded repeats
elsewhere; `bench/regex.py` measures the scaling over adversarial inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_SECRET_PATTERNS = [
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI-style keys
    re.compile(r"\btk_[A-Za-z0-9_\-]{20,}"),  # Tether keys
    re.compile(r"\b(?:ghp|gho|ghu|ghs|github_pat)_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),  # Slack
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"(?i)\bbearer\s++[A-Za-z0-9._\-~+/]{16,}=*"),
]
# key = value, "key": "value", ENV_PREFIX_PASSWORD=value. The key name's prefix (MY_APP_…) is
# left out of the match: it stays as it is either way, and matching it was quadratic. Matched
# on the lower-cased text, case-sensitively: (?i) made it 3-5x slower (290 ms a MB, one call
# holding the GIL); the case-insensitive form is kept for text whose length lower() changes.
_KV = (
    r"((?:pass(?:word|wd)|pwd|secret(?:[_-]?key)?|private[_-]?key|api[_-]?key|access[_-]?token|"
    r"auth[_-]?token|token)[\"']?)(\s*+[:=]\s*+)(\"[^\"]{4,}\"|'[^']{4,}'|[^\s,;\"'}]{4,})"
)
_KEY_VALUE = re.compile(_KV)
_KEY_VALUE_ANY_CASE = re.compile("(?i)" + _KV)
_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----")
_KEY_END = re.compile(r"-----END [A-Z ]{0,40}PRIVATE KEY-----")
REDACTED = "[REDACTED]"


def _redact_private_keys(text: str) -> str:
    """PEM private key blocks, BEGIN to the first END after it. Linear: once no END follows a
    BEGIN, none follows any later one either."""
    out: list[str] = []
    at = 0
    while (begin := _KEY_BEGIN.search(text, at)) is not None:
        end = _KEY_END.search(text, begin.end())
        if end is None:
            break
        out += [text[at : begin.start()], REDACTED]
        at = end.end()
    return "".join(out) + text[at:] if out else text


def _redact_key_values(text: str) -> str:
    lowered = text.lower()
    if len(lowered) != len(text):  # a character lower-cased to several: positions differ
        return _KEY_VALUE_ANY_CASE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    out: list[str] = []
    at = 0
    for match in _KEY_VALUE.finditer(lowered):  # the key and separator kept as written
        out += [text[at : match.start(3)], REDACTED]
        at = match.end(3)
    return "".join(out) + text[at:] if out else text


def redact(text: str) -> str:
    """Replace things that look like secrets with [REDACTED]."""
    text = _redact_private_keys(text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return _redact_key_values(text)


_IDENTIFIERS = [
    re.compile(r"\bhttps?://[^\s<>\"'`)\]]+[^\s<>\"'`)\].,;:!?]"),  # URLs
    re.compile(r"(?<![\w/])(?:~|\.{1,2})?(?:/[\w.\-@]+){2,}/?"),  # unix paths
    re.compile(r"\b[A-Za-z]:\\(?:[\w.\- ]+\\)*[\w.\-]+"),  # windows paths
    re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),  # uuid
    re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,64}\b"),  # hex hashes
    re.compile(r"\b[A-Z][A-Z0-9]{1,9}-\d{1,7}\b"),  # tickets like ABC-1234
    re.compile(r"\b(?=\w*\d)(?=\w*[A-Za-z])\w+(?:[_\-]\w+)+\b"),  # ids like order_8812, v2-rc1
    re.compile(  # numbers with units; never from inside a number list like 1,2,3
        r"(?<![\w.])(?<!\d,)[-+]?\d[\d,]*+(?:\.\d++)?+\s?(?:%|ms|s|sec|min|h|hours?|days?|weeks?|"
        r"KiB|MiB|GiB|TiB|KB|MB|GB|TB|kB|B|bytes|k|M|km|m|cm|mm|kg|g|mg|lb|°C|°F|"
        r"USD|EUR|GBP|JPY|CNY|\$|€|£|req/s|tokens?|rps|Hz|kHz|MHz|GHz)(?![\w])"
    ),
    re.compile(r"[$€£]\s?\d[\d,]*(?:\.\d+)?"),  # money before the number
    re.compile(r"\"([^\"\n]{2,60})\"|“([^”\n]{2,60})”|'([A-Z][^'\n]{1,59})'"),  # quoted names
]


class _Anchored:
    """`\\b<name>+<anchor>` found from its anchor: `anchor` is searched, then the name is read
    back from it (at most `longest` characters, starting at a word boundary, never inside the
    previous match). Matching the name first, from every position of a long run of name
    characters, was quadratic. Same matches as the one regex, for names up to `longest`."""

    def __init__(self, name: str, anchor: str, longest: int) -> None:
        self.anchor = re.compile(anchor)
        self.name = re.compile(rf"\b{name}{{1,{longest}}}\Z")
        self.longest = longest

    def finditer(self, text: str) -> Iterator[tuple[int, str]]:
        done = 0
        for anchor in self.anchor.finditer(text):
            at = anchor.start()
            name = self.name.search(text, max(0, at - self.longest, done), at)
            if name is not None:
                done = anchor.end()
                yield name.start(), name.group(0) + anchor.group(0)


_ANCHORED = [
    _Anchored(r"[\w.+-]", r"@[\w-]+(?:\.[\w-]+)+\b", 64),  # emails
    _Anchored(  # file names
        r"[\w\-]",
        r"\.(?:py|js|ts|tsx|go|rs|java|c|h|cpp|md|json|ya?ml|toml|sql|txt|csv|sh|html|css)\b",
        255,
    ),
]


def _matches(text: str) -> Iterator[tuple[int, str]]:
    for anchored in _ANCHORED:
        yield from anchored.finditer(text)
    for pattern in _IDENTIFIERS:
        for match in pattern.finditer(text):
            groups = [g for g in match.groups() if g] if pattern.groups else []
            yield match.start(), groups[0] if groups else match.group(0)


def extract(text: str) -> list[str]:
    """Identifiers in order of first appearance, without duplicates."""
    first_seen: dict[str, int] = {}
    for at, found in _matches(text):
        value = found.strip().rstrip(".,;:!?")
        if len(value) >= 2 and REDACTED not in value and first_seen.get(value, at + 1) > at:
            first_seen[value] = at
    # order of first appearance in the text, not of pattern
    return sorted(first_seen, key=lambda v: (first_seen[v], v))


def merge_ledgers(previous: Iterable[str], new: Iterable[str], limit: int = 2000) -> list[str]:
    """The previous ledger verbatim, then new identifiers; the newest `limit` entries."""
    out: dict[str, None] = dict.fromkeys(previous)
    for item in new:
        out.setdefault(item, None)
    items = list(out)
    return items[-limit:]


def render(ledger: Iterable[str]) -> str:
    return "\n".join(f"- {item}" for item in ledger)
