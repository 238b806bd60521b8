"""Logging is safe whatever it is given (issue 12): a crash's traceback has no local variables
and no secrets, is bounded, takes milliseconds to render, and a stderr nobody reads never blocks
the logger. Each case runs `tether.logs.setup` in a fresh interpreter, as `tether serve` does."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

KEY = "tk_live_0123456789abcdefghijklmnop"
UPSTREAM = "sk-proj-0123456789abcdefghijklmnop"


def run(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_crash_is_logged_without_locals_or_keys_quickly() -> None:
    out = run(
        f"""
        import logging, time
        import structlog
        from tether import logs
        logs.setup("info")
        log = structlog.get_logger("t")

        def turn(api_key, headers):
            deep = []
            for _ in range(250):
                deep = [deep, {{"authorization": "Bearer " + api_key}}]
            raise ValueError("upstream said no to " + headers["Authorization"])

        t0 = time.perf_counter()
        for _ in range(20):
            try:
                turn("{KEY}", {{"Authorization": "Bearer {UPSTREAM}"}})
            except ValueError:
                log.exception("turn.crashed", authorization="Bearer {KEY}", note="key {KEY}")
                logging.getLogger("uvicorn.error").exception("asgi crash {UPSTREAM}")
        print(f"took {{time.perf_counter() - t0:.3f}}")
        """
    )
    assert out.returncode == 0, out.stderr
    took = float(out.stdout.split()[-1])
    log = out.stderr
    assert took < 1.0, f"20 crashes took {took:.2f} s to log"
    assert KEY not in log and UPSTREAM not in log, log[:2000]
    assert log.count("turn.crashed") == 20 and log.count("asgi crash") == 20
    assert "ValueError: upstream said no to Bearer [REDACTED]" in log
    assert "deep = " not in log and "api_key =" not in log  # no locals
    assert len(log) < 20 * 10_000, f"{len(log)} bytes for 40 tracebacks"


def test_a_stderr_nobody_reads_does_not_block_the_logger() -> None:
    """stderr is a pipe this test never reads until the child is done: the pipe fills after
    ~64 KiB (~450 of these lines), and the child's 10,000 log lines must still go by quickly."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, sys, time
                import structlog
                from tether import logs
                logs.setup("info")
                log = structlog.get_logger("t")
                t0 = time.perf_counter()
                for i in range(10_000):
                    log.info("line", i=i, pad="x" * 100)
                took = time.perf_counter() - t0
                os.write(1, f"took {took:.3f}\\n".encode())
                os._exit(0)  # not waiting for the queue to drain into a pipe nobody reads
                """
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + 60
    line = proc.stdout.readline().decode()
    assert time.monotonic() < deadline and line.startswith("took"), line
    proc.stderr.close()
    proc.stdout.close()
    proc.wait(10)
    assert float(line.split()[1]) < 5.0, line  # blocked, it would never get here
