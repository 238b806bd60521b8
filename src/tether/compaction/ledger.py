"""The identifier ledger and secret redaction: deterministic, no model involved.

The ledger lists exact identifiers seen in summarised messages (URLs, paths, emails, numbers with
units, ids and hashes, quoted names). It is carried forward verbatim from checkpoint to
checkpoint, so identifiers survive any number of compactions even if a summary drops them, up to
its cap (2,000 entries; past that the oldest entries give way).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SECRET_PATTERNS = [
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI-style keys
    re.compile(r"\btk_[A-Za-z0-9_\-]{20,}"),  # Tether keys
    re.compile(r"\b(?:ghp|gho|ghu|ghs|github_pat)_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),  # Slack
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-~+/]{16,}=*"),
    re.compile(  # key = value, "key": "value", ENV_PREFIX_PASSWORD=value
        r"(?i)([A-Za-z0-9_\-]*(?:password|passwd|pwd|secret|secret[_-]?key|private[_-]?key|"
        r"api[_-]?key|access[_-]?token|auth[_-]?token|token)[\"']?)"
        r"(\s*[:=]\s*)(\"[^\"]{4,}\"|'[^']{4,}'|[^\s,;\"'}]{4,})"
    ),
]
REDACTED = "[REDACTED]"


def redact(text: str) -> str:
    """Replace things that look like secrets with [REDACTED]."""
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 3:
            text = pattern.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


_IDENTIFIERS = [
    re.compile(r"\bhttps?://[^\s<>\"'`)\]]+[^\s<>\"'`)\].,;:!?]"),  # URLs
    re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),  # emails
    re.compile(r"(?<![\w/])(?:~|\.{1,2})?(?:/[\w.\-@]+){2,}/?"),  # unix paths
    re.compile(r"\b[A-Za-z]:\\(?:[\w.\- ]+\\)*[\w.\-]+"),  # windows paths
    re.compile(
        r"\b[\w\-]+\.(?:py|js|ts|tsx|go|rs|java|c|h|cpp|md|json|ya?ml|toml|sql|txt|csv|sh|html|css)\b"
    ),
    re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),  # uuid
    re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,64}\b"),  # hex hashes
    re.compile(r"\b[A-Z][A-Z0-9]{1,9}-\d{1,7}\b"),  # tickets like ABC-1234
    re.compile(r"\b(?=\w*\d)(?=\w*[A-Za-z])\w+(?:[_\-]\w+)+\b"),  # ids like order_8812, v2-rc1
    re.compile(
        r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?\s?(?:%|ms|s|sec|min|h|hours?|days?|weeks?|"
        r"KiB|MiB|GiB|TiB|KB|MB|GB|TB|kB|B|bytes|k|M|km|m|cm|mm|kg|g|mg|lb|°C|°F|"
        r"USD|EUR|GBP|JPY|CNY|\$|€|£|req/s|tokens?|rps|Hz|kHz|MHz|GHz)(?![\w])"
    ),
    re.compile(r"[$€£]\s?\d[\d,]*(?:\.\d+)?"),  # money before the number
    re.compile(r"\"([^\"\n]{2,60})\"|“([^”\n]{2,60})”|'([A-Z][^'\n]{1,59})'"),  # quoted names
]


def extract(text: str) -> list[str]:
    """Identifiers in order of first appearance, without duplicates."""
    first_seen: dict[str, int] = {}
    for pattern in _IDENTIFIERS:
        for match in pattern.finditer(text):
            groups = [g for g in match.groups() if g] if pattern.groups else []
            value = (groups[0] if groups else match.group(0)).strip().rstrip(".,;:!?")
            if len(value) >= 2 and REDACTED not in value:
                at = match.start()
                if first_seen.get(value, at + 1) > at:
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
