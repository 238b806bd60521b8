"""C1 / A8: kill -9 the server under load, restart it, and let the history checker look.
`make test` runs a few rounds; TETHER_STRESS_ROUNDS raises them (`make stress`)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import httpx2

from tests.checker import History, Op, check
from tests.support import ScriptedUpstream, TetherServer

ROUNDS = int(os.environ.get("TETHER_STRESS_ROUNDS", "4"))
CLIENTS = 4


def _client(srv: TetherServer, history: History, n: int, stop: threading.Event) -> None:
    """A bridge: one conversation, one message at a time, retrying each with its key until it
    gets a definite answer (so an indeterminate attempt is retried, never doubled)."""
    conv = f"crash-{n}"
    i = 0
    with httpx2.Client(timeout=10) as http:
        while not stop.is_set():
            text, key = f"c{n}-m{i}", f"c{n}-k{i}"
            i += 1
            outcome = "info"
            for _ in range(40):
                if stop.is_set() and outcome == "info":
                    break
                try:
                    r = http.post(
                        f"{srv.url}/v1/chat/completions",
                        json={"messages": [{"role": "user", "content": text}]},
                        headers={"X-Hermes-Session-Id": conv, "Idempotency-Key": key},
                    )
                except httpx2.TransportError:
                    time.sleep(0.1)  # the server is down: indeterminate, retry with the key
                    continue
                if r.status_code == 200:
                    outcome = "ok"
                    break
                if r.status_code in (409, 502, 503):
                    time.sleep(0.1)
                    continue
                outcome = "fail"
                break
            history.record(Op(conv, text, outcome, key))  # type: ignore[arg-type]


def test_kill_9_under_load_loses_no_acknowledged_turn(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    srv = TetherServer(tmp_path / "crash.db", upstream.base_url).start()
    history = History()
    stop = threading.Event()
    clients = [
        threading.Thread(target=_client, args=(srv, history, n, stop)) for n in range(CLIENTS)
    ]
    for t in clients:
        t.start()
    rng = random.Random(7)
    try:
        for _ in range(ROUNDS):
            time.sleep(rng.uniform(0.3, 1.0))
            assert srv.proc is not None
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait()
            srv.proc = None
            srv.logfile.close()
            srv.start()  # also proves the single-server lock died with the process
        time.sleep(0.5)
    finally:
        stop.set()
        for t in clients:
            t.join(timeout=60)
        srv.stop()
    report = check(srv.db_path, history)
    print(f"acked={report.acknowledged} indeterminate_present={report.indeterminate_present}")
    assert report.acknowledged > 20, report  # the load really ran
    assert report.lost == [], report.lost
    assert report.duplicated == [], report.duplicated
    assert report.failed_present == [], report.failed_present
    assert report.violations == [], report.violations
