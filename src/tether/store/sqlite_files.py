"""The SQLite file itself: one server per file (the lock), the file still being the one opened
(not deleted, replaced, or its `-shm` made unusable), and its schema not newer than this build.

Failures measured before these checks (issue 12): a symlink, a hard link or a deleted `.lock`
file let two servers write one database (through a hard link, 60 of 120 turns answered 200 were
lost: each name had its own WAL); a database deleted while running took five more turns with 200
and /health ok, and was empty after a restart; a database from a newer Tether was "up to date"
and every request answered 500; a `-shm` file made immutable killed the process with SIGBUS.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
from importlib import resources
from pathlib import Path
from typing import IO

import structlog

from tether.store.errors import SchemaTooNew, StorageUnavailable

log = structlog.get_logger("tether.store")
_FS_IOC_GETFLAGS = 0x80086601
_UNWRITABLE_FLAGS = 0x10 | 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/path.db` or `sqlite:////abs/path.db` → Path."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url[len("sqlite:///") :])


def claim_single_server(url: str) -> IO[bytes]:
    """Take the lock that lets one `tether serve` at a time use this SQLite file (turns are
    serialised per conversation in-process): an exclusive flock on the database file itself,
    opened by its real path, so a symlink, a hard link or a deleted lock file cannot let a
    second server in (flock and SQLite's own fcntl locks do not interact). A file with more than
    one name is refused: each name gets its own `-wal` file, and a transaction committed through
    one is lost (or worse) when the file is opened through the other. Kept for the life of the
    returned file, which must stay open (closing any descriptor of the file would drop SQLite's
    fcntl locks in this process)."""
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    real = path.resolve()
    named = str(path) if real == path.absolute() else f"{path} (that is, {real})"
    handle = open(real, "ab")  # noqa: SIM115 - kept open for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(
            f"another `tether serve` is already using {named}: SQLite serves one process "
            "(stop the other one, or use another database file)"
        ) from None
    links = os.fstat(handle.fileno()).st_nlink
    if links > 1:
        handle.close()
        raise RuntimeError(
            f"the database file {named} has {links} names (hard links): each name would get "
            "its own write-ahead log, and turns committed through one would be lost through "
            "another. Keep one name (copy the file instead of linking it)"
        )
    problem = _shm_problem(Path(f"{real}-shm"))
    if problem:
        handle.close()
        raise RuntimeError(problem)
    return handle


def _inode_flags(fd: int) -> int:
    """The file's inode flags (chattr), 0 where the file system has none."""
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 8)
    except OSError:
        return 0
    return int.from_bytes(buf[:4], "little")


def _shm_problem(shm: Path) -> str | None:
    """Why SQLite could not use this `-shm` file safely (it maps it into memory: a file that
    cannot be written, or shrinks, kills the process with SIGBUS), or None."""
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"the SQLite shared-memory file {shm} cannot be written ({exc.strerror})"
    try:
        if _inode_flags(fd) & _UNWRITABLE_FLAGS:
            return f"the SQLite shared-memory file {shm} is immutable or append-only (chattr)"
    finally:
        os.close(fd)
    return None


class Files:
    """What the open database must still be, checked before SQLite touches it: the file at
    its path is the one opened (not deleted or replaced), and its `-shm` file (which SQLite
    maps into memory) has not shrunk or become unwritable — either would let writes answer
    200 into a file nobody will open again, or kill the process with SIGBUS."""

    def __init__(self, path: Path) -> None:
        self.path = path
        st = os.stat(path)
        self.identity = (st.st_dev, st.st_ino)
        self.shm_fd: int | None = None
        self.shm_size = 0
        self.wal_fd: int | None = None
        self._opening = threading.Lock()  # checks run on the loop's and the pools' threads
        self._open_companions()
        self.failed: str | None = None

    def _open_companions(self) -> None:
        """The -shm and -wal files, once SQLite has made them (at the first transaction)."""
        with self._opening, contextlib.suppress(OSError):
            if self.shm_fd is None:
                self.shm_fd = os.open(f"{self.path}-shm", os.O_RDONLY | os.O_CLOEXEC)
                self.shm_size = os.fstat(self.shm_fd).st_size
            if self.wal_fd is None:
                self.wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)

    def wal_bytes(self) -> int:
        if self.wal_fd is None:
            self._open_companions()
            if self.wal_fd is None:
                return 0
        return os.fstat(self.wal_fd).st_size

    def check(self) -> None:
        if self.failed is None:
            self.failed = self._problem()
            if self.failed is not None:
                log.error("store.file_changed", path=str(self.path), problem=self.failed)
        if self.failed is not None:
            raise StorageUnavailable(
                f"the server's database cannot be used: {self.failed}; nothing of this "
                "request was stored. The operator must restart the server",
                retry_after=30,
            )

    def _problem(self) -> str | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "its file was deleted while the server runs"
        if (st.st_dev, st.st_ino) != self.identity:
            return "its file was replaced while the server runs"
        if self.shm_fd is None:
            self._open_companions()
        if self.shm_fd is not None:
            size = os.fstat(self.shm_fd).st_size
            if size < self.shm_size:
                return "its -shm file was truncated while the server runs"
            self.shm_size = size
            if _inode_flags(self.shm_fd) & _UNWRITABLE_FLAGS:
                return "its -shm file was made immutable while the server runs"
        return None

    def close(self) -> None:
        for fd in (self.shm_fd, self.wal_fd):
            if fd is not None:
                os.close(fd)
        self.shm_fd = self.wal_fd = None


@functools.cache
def known_schema_version() -> int:
    """The newest migration this build has (its number, from store/migrations/sqlite)."""
    names = [f.name for f in resources.files("tether.store.migrations.sqlite").iterdir()]
    return max(int(n.split("_", 1)[0]) for n in names if n.endswith(".sql"))


def check_schema_version(conn: sqlite3.Connection, path: Path) -> None:
    """SchemaTooNew if the database's schema is newer than this build (it would misread it,
    and every request would fail)."""
    table = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    if conn.execute(table).fetchone() is None:
        return
    (have,) = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    known = known_schema_version()
    if have is not None and have > known:
        conn.close()
        raise SchemaTooNew(
            f"the database {path} has schema version {have}, newer than this build of Tether "
            f"knows (version {known}): it was written by a newer Tether. Run that version, "
            "or restore a backup made before the upgrade"
        )
