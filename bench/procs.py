"""The processes under test (scripted upstream, `tether serve`) and what /proc says about them."""

from __future__ import annotations

import hashlib
import os
import platform
import select
import subprocess
import sys
from pathlib import Path

import httpx2

from tether.testing.processes import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

try:  # psutil is optional; /proc is enough on Linux
    import psutil  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the venv
    psutil = None


def rss_bytes(pid: int) -> int | None:
    """Resident set size of `pid` (VmRSS), or None once it is gone."""
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def busy_cpu_seconds() -> float:
    """User + system CPU time of every process on the machine so far (irq time excluded)."""
    with open("/proc/stat") as f:
        user, nice, system = (int(x) for x in f.readline().split()[1:4])
    return (user + nice + system) / CLK_TCK


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / MIB:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if dirty:  # identify the exact code under test: a hash of the uncommitted src/ changes
        diff = subprocess.run(
            ["git", "-C", str(ROOT), "diff", "HEAD", "--", "src"],
            capture_output=True,
            check=False,
        ).stdout
        files = len(dirty.splitlines())
        dirty = f" + uncommitted changes in {files} src/ files (diff sha1 "
        dirty += f"{hashlib.sha1(diff).hexdigest()[:10]})"
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": (commit or "unknown") + dirty,
    }


class Upstream:
    """`python -m tether.testing.upstream` on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether.testing.upstream", "--port", str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if "listening" not in line:
            stop(self.proc)
            raise RuntimeError(f"scripted upstream did not start: {line!r}")
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx2.Client(base_url=self.url, timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def reset(self) -> None:
        """Forget recorded requests (the upstream keeps every body in memory)."""
        self.http.post("/_script/reset").raise_for_status()

    def close(self) -> None:
        self.http.close()
        stop(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()


def tether_env(db_path: Path, upstream_base_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "TETHER_HOST": "127.0.0.1",
        "TETHER_DATABASE_URL": f"sqlite:///{db_path}",
        "TETHER_DEFAULT_MODEL": "scripted",
        "TETHER_LOG_LEVEL": "warning",
        **extra,
    }
    if upstream_base_url:
        env["TETHER_UPSTREAM_BASE_URL"] = upstream_base_url
    return env


def migrate(db_path: Path) -> None:
    """`python -m tether migrate` on the file, so seeding writes into the real schema."""
    out = subprocess.run(
        [sys.executable, "-m", "tether", "migrate"],
        env=tether_env(db_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"tether migrate failed: {out.stderr}")


class Tether:
    """`python -m tether serve` (one process) on a SQLite file."""

    def __init__(self, db_path: Path, upstream_base_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = tether_env(db_path, upstream_base_url, TETHER_PORT=str(self.port))
        self.log = db_path.with_suffix(".serve.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Tether:
        self._logfile = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "serve"],
            env=self.env,
            stdout=self._logfile,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"{self.url}/health", self.proc, 30, self.log)
        except RuntimeError:
            self.stop()
            raise
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
            self._logfile.close()
