"""Reading a Hermes Agent `state.db` as it is: its sessions and message rows, only the columns
the file has (Hermes 0.13–0.19 schemas differ), without writing a byte next to it.

A plain read-only open is not enough: SQLite creates `-wal`/`-shm` files beside a WAL database
whenever the directory lets it, even for `mode=ro`. So a file with no pending WAL is opened
`immutable=1` (nothing is created, nothing is missed), and one whose `-wal` holds frames (Hermes
still running, or stopped uncleanly) is copied with its WAL to a temporary directory and read
there, so the rows still in the WAL are imported too."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

SQLITE_MAGIC = b"SQLite format 3\x00"
# the columns an import reads, when the file has them; the first ones of each are required
SESSION_REQUIRED = ("id",)
SESSION_OPTIONAL = (
    "source",
    "model",
    "system_prompt",
    "parent_session_id",
    "started_at",
    "ended_at",
    "end_reason",
    "title",
    "user_id",
    "chat_id",
    "chat_type",
    "thread_id",
    "display_name",
    "profile_name",
)
MESSAGE_REQUIRED = ("id", "session_id", "role", "content")
MESSAGE_OPTIONAL = (
    "tool_call_id",
    "tool_calls",
    "tool_name",
    "timestamp",
    "reasoning",
    "reasoning_content",
    "active",
    "compacted",
)


class HermesImportError(Exception):
    """The file cannot be imported: not there, not SQLite, corrupt, or not a Hermes state.db.
    The message is one line naming the file and the reason."""


@dataclass(slots=True)
class HermesSession:
    id: str
    parent_id: str | None
    end_reason: str | None
    started_at: float
    ended_at: float | None
    info: dict[str, Any]  # the other columns read (source, model, title, …), as stored


@dataclass(slots=True)
class HermesRow:
    """One `messages` row. `active`/`compacted` are True/False on schemas without them."""

    id: int
    session_id: str
    role: str
    content: Any
    tool_call_id: str | None
    tool_calls: str | None
    tool_name: str | None
    timestamp: float | None
    reasoning: str | None
    active: bool
    compacted: bool


@dataclass(slots=True)
class HermesTables:
    sessions: dict[str, HermesSession]  # by id, in the order Hermes started them
    rows: dict[str, list[HermesRow]] = field(default_factory=dict)  # per session, by row id
    schema_version: int | None = None
    has_active: bool = False  # the `active` column exists (in-place compaction possible)
    orphan_rows: int = 0  # rows of a session id the sessions table does not have


def read_tables(path: Path) -> HermesTables:
    """Every session and message row of the file, or HermesImportError (one line)."""
    with open_hermes(path) as conn:
        try:
            return _read(conn)
        except sqlite3.DatabaseError as exc:
            raise HermesImportError(f"{path}: cannot read it: {exc}") from None
        except HermesImportError as exc:
            raise HermesImportError(f"{path}: {exc}") from None


@contextmanager
def open_hermes(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection on the file that leaves its directory untouched."""
    _check_file(path)
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        with tempfile.TemporaryDirectory(prefix="tether-hermes-") as tmp:
            copy = Path(tmp) / path.name
            shutil.copyfile(path, copy)
            shutil.copyfile(wal, Path(tmp) / wal.name)
            conn = _connect(f"file:{quote(str(copy))}", path)
            try:
                yield conn
            finally:
                conn.close()
        return
    conn = _connect(f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1", path)
    try:
        yield conn
    finally:
        conn.close()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise HermesImportError(f"{path}: no such file")
    if not path.is_file():
        raise HermesImportError(f"{path}: not a file")
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except OSError as exc:
        raise HermesImportError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        raise HermesImportError(f"{path}: not an SQLite database (no SQLite header)")


def _connect(uri: str, path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise HermesImportError(f"{path}: not a readable SQLite database: {exc}") from None
    return conn


def columns_of(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _columns(conn: sqlite3.Connection, table: str, required: tuple[str, ...]) -> set[str]:
    have = columns_of(conn, table)
    if not have:
        raise HermesImportError(f"no `{table}` table")
    missing = [c for c in required if c not in have]
    if missing:
        raise HermesImportError(f"the `{table}` table has no column {', '.join(missing)}")
    return have


def _read(conn: sqlite3.Connection) -> HermesTables:
    try:
        session_cols = _columns(conn, "sessions", SESSION_REQUIRED)
        message_cols = _columns(conn, "messages", MESSAGE_REQUIRED)
    except HermesImportError as exc:
        raise HermesImportError(f"not a Hermes state.db: {exc}") from None
    _integrity(conn)
    tables = HermesTables(
        sessions=_sessions(conn, session_cols),
        schema_version=_schema_version(conn),
        has_active="active" in message_cols,
    )
    for row in _rows(conn, message_cols):
        if row.session_id not in tables.sessions:
            tables.orphan_rows += 1
            continue
        tables.rows.setdefault(row.session_id, []).append(row)
    return tables


def _integrity(conn: sqlite3.Connection) -> None:
    """A damaged page in either table stops the import before anything is written."""
    for table in ("sessions", "messages"):
        try:
            problems = [r[0] for r in conn.execute(f"PRAGMA quick_check({table})")]
        except sqlite3.OperationalError:  # an SQLite without per-table checks: the read decides
            return
        if problems != ["ok"]:
            first = " ".join(str(problems[0]).replace("*** in database main ***", "").split())
            raise sqlite3.DatabaseError(f"the database is damaged ({first[:160]})")


def _schema_version(conn: sqlite3.Connection) -> int | None:
    if "version" not in columns_of(conn, "schema_version"):
        return None
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _sessions(conn: sqlite3.Connection, have: set[str]) -> dict[str, HermesSession]:
    cols = [c for c in (*SESSION_REQUIRED, *SESSION_OPTIONAL) if c in have]
    order = "started_at, rowid" if "started_at" in have else "rowid"
    out: dict[str, HermesSession] = {}
    for values in conn.execute(f"SELECT {', '.join(cols)} FROM sessions ORDER BY {order}"):
        rec = dict(zip(cols, values, strict=True))
        sid = rec.pop("id")
        if sid is None:
            continue
        sid = str(sid)
        parent = rec.pop("parent_session_id", None)
        out[sid] = HermesSession(
            id=sid,
            parent_id=str(parent) if parent else None,
            end_reason=rec.pop("end_reason", None),
            started_at=_float(rec.pop("started_at", None)) or 0.0,
            ended_at=_float(rec.pop("ended_at", None)),
            info=rec,
        )
    return out


def _rows(conn: sqlite3.Connection, have: set[str]) -> Iterator[HermesRow]:
    cols = [c for c in (*MESSAGE_REQUIRED, *MESSAGE_OPTIONAL) if c in have]
    index = {c: i for i, c in enumerate(cols)}

    def get(values: tuple[Any, ...], name: str, default: Any = None) -> Any:
        i = index.get(name)
        return default if i is None else values[i]

    reasoning = "reasoning" if "reasoning" in have else "reasoning_content"
    for values in conn.execute(f"SELECT {', '.join(cols)} FROM messages ORDER BY id"):
        active = get(values, "active", 1)
        yield HermesRow(
            id=int(values[0]),
            session_id=str(values[1]),
            role=str(values[2]),
            content=values[3],
            tool_call_id=get(values, "tool_call_id"),
            tool_calls=get(values, "tool_calls"),
            tool_name=get(values, "tool_name"),
            timestamp=_float(get(values, "timestamp")),
            reasoning=get(values, reasoning) or get(values, "reasoning_content"),
            active=active is None or bool(active),  # Hermes reads NULL as active
            compacted=bool(get(values, "compacted", 0)),
        )


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
