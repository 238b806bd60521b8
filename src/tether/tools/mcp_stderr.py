"""An MCP stdio child's stderr: a pipe whose read end a daemon thread logs line by line (event
`mcp.stderr`, each line cut to 2,000 characters), so nothing of it is held in memory."""

from __future__ import annotations

import os
import threading
from typing import TextIO

import structlog

log = structlog.get_logger("tether.tools")

MAX_STDERR_LINE = 2000


def _pump(fd: int, server: str) -> None:
    """Log each line read from `fd` until EOF (every writer closed it); the rest of a long
    line is skipped."""
    with open(fd, "rb", buffering=65536) as pipe:
        skipping = False
        while chunk := pipe.readline(MAX_STDERR_LINE):
            cut = len(chunk) == MAX_STDERR_LINE and not chunk.endswith(b"\n")
            if not skipping:
                line = chunk.decode("utf-8", errors="replace").rstrip("\r\n")
                log.info("mcp.stderr", server=server, line=line, cut=cut)
            skipping = cut


def stderr_pipe(server: str) -> TextIO:
    """The write end of a new pipe, to give a child as its stderr (close it once the child is
    spawned); a daemon thread logs what arrives at the read end."""
    read_fd, write_fd = os.pipe()
    thread = threading.Thread(
        target=_pump, args=(read_fd, server), name=f"mcp-stderr-{server}", daemon=True
    )
    thread.start()
    return os.fdopen(write_fd, "w")
