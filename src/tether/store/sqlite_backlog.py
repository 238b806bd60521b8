"""The search index's backlog (migration 0008): a turn's commit records the messages it added;
`drain` indexes what is recorded in one transaction (one FTS5 segment for many turns, where a
segment per turn cost ~0.35 ms of a ~2 ms turn, measured). The `Indexer` drains every
INDEX_EVERY seconds while there is a backlog, and on demand: before a search, a fork (which
copies index rows) and a delete."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import orjson
import structlog

from tether.model import Message
from tether.store import sqlite_search
from tether.store.sqlite_db import Database

log = structlog.get_logger("tether.store")

INDEX_EVERY = 0.5  # seconds between background drains
BATCH = 5000  # backlog rows per drain transaction


def enqueue(c: sqlite3.Connection, conversation_pk: int, first_seq: int, last_seq: int) -> None:
    c.execute(
        "INSERT INTO search_backlog (conversation_pk, first_seq, last_seq) VALUES (?, ?, ?)",
        (conversation_pk, first_seq, last_seq),
    )


def pending(c: sqlite3.Connection) -> bool:
    return c.execute("SELECT 1 FROM search_backlog LIMIT 1").fetchone() is not None


def drain(c: sqlite3.Connection, conversation_pk: int | None = None) -> int:
    """Index the recorded messages (of one conversation, or the first BATCH rows of all);
    how many backlog rows were done. Runs inside the caller's write transaction."""
    where, args = ("WHERE conversation_pk = ?", (conversation_pk,)) if conversation_pk else ("", ())
    rows = c.execute(
        f"SELECT rowid, conversation_pk, first_seq, last_seq FROM search_backlog {where} "
        "ORDER BY rowid LIMIT ?",
        (*args, BATCH),
    ).fetchall()
    for _, pk, first, last in rows:
        stored = c.execute(
            "SELECT role, content FROM messages WHERE conversation_pk = ? AND seq BETWEEN ? "
            "AND ? ORDER BY seq",
            (pk, first, last),
        ).fetchall()
        messages = [
            Message(role, None if text is None else orjson.loads(text)) for role, text in stored
        ]
        sqlite_search.index_messages(c, pk, first, messages)
    if rows:
        c.executemany("DELETE FROM search_backlog WHERE rowid = ?", [(r[0],) for r in rows])
    return len(rows)


class Indexer:
    """Drains the backlog in the background while the store is open."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self) -> None:
        """Index everything committed so far (a search is never behind the turns)."""
        while await self.db.read(pending):
            await self.db.write(drain)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INDEX_EVERY)
            try:
                await self.flush()
            except Exception as exc:  # storage trouble: the next round (or search) retries
                log.warning("search.index_failed", error=str(exc)[:300])

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # what is left is indexed at the next start
            await self.flush()
