"""Logging for a server under attack: one line per event on stderr (structlog and the stdlib's
loggers alike), safe whatever it is given.

- **No local variables in tracebacks.** structlog's default renderer, with rich installed, prints
  every frame's locals: a 562-byte body nested 256 deep made a 4.4 MB log entry that took 17 s
  to render on the event loop, and locals hold request and upstream credentials. Tracebacks are
  the stdlib's plain ones, capped (MAX_TRACEBACK_CHARS, the innermost frames kept).
- **Secrets redacted in every line**: API keys (`tk_…`, `sk-…`, …), `Bearer` tokens, and any
  field whose name says it holds a credential (`authorization`, `api_key`, …), through the same
  (linear-time) redaction compaction uses. Each field is capped at MAX_FIELD_CHARS.
- **Writing never blocks the caller**: lines go to a bounded queue that a daemon thread writes
  to stderr. A stderr nobody reads (a full pipe) costs dropped lines, counted and reported when
  it drains, never a stalled event loop. The queue is flushed at exit.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from tether.compaction.ledger import REDACTED, redact

MAX_FIELD_CHARS = 4096
MAX_TRACEBACK_CHARS = 16_384
QUEUE_LINES = 10_000
_SENSITIVE = ("authorization", "api_key", "apikey", "password", "secret", "token", "cookie")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _cap(text: str, limit: int, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep_end:
        return f"[… {cut:,} characters cut]\n" + text[-limit:]
    return text[:limit] + f"… [{cut:,} characters cut]"


def safe_text(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """A value as it may be logged: text (repr for anything else), capped, secrets redacted."""
    text = value if isinstance(value, str) else repr(value)
    return redact(_cap(text, limit))


def format_exception(exc_info: ExcInfo) -> str:
    """The stdlib's traceback (no locals), innermost frames kept within MAX_TRACEBACK_CHARS,
    secrets redacted. Never raises: a failure to format is itself the text."""
    try:
        text = "".join(traceback.format_exception(*exc_info))
    except Exception as exc:  # pragma: no cover - traceback formatting failing is rare
        text = f"{exc_info[0].__name__} (traceback unavailable: {type(exc).__name__})\n"
    return redact(_cap(text, MAX_TRACEBACK_CHARS, keep_end=True))


def redact_fields(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """structlog processor: every field made safe (see safe_text); credential fields blanked."""
    for name, value in event.items():
        if value is None or isinstance(value, bool | int | float):
            continue
        if name != "event" and any(word in name.lower() for word in _SENSITIVE):
            event[name] = REDACTED
        elif name == "exception":
            event[name] = value if isinstance(value, str) else safe_text(value)
        else:
            event[name] = safe_text(value)
    return event


class _Formatter(logging.Formatter):
    """The stdlib's records (uvicorn, asyncio, httptools): plain tracebacks, capped, redacted."""

    def formatException(self, ei: Any) -> str:
        if ei and ei[0] is not None:
            return format_exception(ei)
        return ""

    def format(self, record: logging.LogRecord) -> str:
        return redact(_cap(super().format(record), MAX_TRACEBACK_CHARS + MAX_FIELD_CHARS))


class QueueWriter:
    """A file-like sink: write() queues the text; a daemon thread writes it to `out`."""

    def __init__(self, out: TextIO, lines: int = QUEUE_LINES) -> None:
        self.out = out
        self.queue: queue.Queue[str | None] = queue.Queue(lines)
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="tether-log", daemon=True)
        self.thread.start()

    def write(self, text: str) -> int:
        try:
            self.queue.put_nowait(text)
        except queue.Full:
            self.dropped += 1
        return len(text)

    def flush(self) -> None:
        pass  # the writer thread flushes after every line

    def _run(self) -> None:
        while (text := self.queue.get()) is not None:
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                text = f"[{dropped} log lines dropped: stderr was not keeping up]\n" + text
            try:
                self.out.write(text)
                self.out.flush()
            except (OSError, ValueError):  # stderr closed: nothing left to tell
                pass

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most `timeout` seconds), then stop."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)


_writer: QueueWriter | None = None


class _JsonFormatter(_Formatter):
    """The stdlib's records as JSON objects (TETHER_LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": safe_text(record.getMessage()),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = format_exception(record.exc_info)
        return orjson.dumps(line).decode()


def _json(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def setup(level: str, out: TextIO | None = None, json: bool = False) -> None:
    """Configure structlog and the stdlib's root logger as described above; `json`: one JSON
    object per line, with what is bound to the context (the request's id) on each."""
    global _writer
    lvl = getattr(logging, level.upper(), logging.INFO)
    if _writer is None:
        _writer = QueueWriter(out or sys.stderr)
        atexit.register(_writer.close)
    handler = logging.StreamHandler(_writer)
    handler.setFormatter(
        _JsonFormatter() if json else _Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.ExceptionRenderer(format_exception),
            redact_fields,
            structlog.processors.JSONRenderer(serializer=_json)
            if json
            else structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.WriteLoggerFactory(_writer),  # type: ignore[arg-type]
    )
