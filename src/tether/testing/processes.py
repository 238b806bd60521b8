"""Small helpers for running real processes in tests, benchmarks and demos."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

# the stdlib's client, never through a proxy the environment names (the URL is a local one)
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Terminate a process we started, then kill it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float, log: Path) -> None:
    """Poll `url` until it answers 200; fail early (with the log) if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode}: {_tail(log)}")
        try:
            with _DIRECT.open(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (OSError, http.client.HTTPException):  # not up yet, or not 200 (HTTPError)
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""
