"""The ledger's extraction and the secret redaction stay linear over adversarial text (issue 12:
`"a" * 20_000` took 30 s in `redact`, a 28,891-character JSON number array froze the server for
34 s — the regex engine holds the GIL). Every shape of bench/regex.py at 300,000 characters must
take under 3 s (about 0.2 s each when linear); a quadratic pattern takes hours. The work runs in
a child process, so a regression fails at the timeout instead of hanging the suite."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx2
import orjson
from bench.regex import SHAPES

from tests.probe import health_probe
from tests.support import TetherServer

SIZE = 300_000
BOUND_S = 3.0

CHILD = f"""
import sys, time, orjson
from bench.regex import SHAPES
from tether.compaction import ledger
out = {{}}
for name, make in SHAPES.items():
    text = make({SIZE})
    t0 = time.perf_counter()
    ledger.redact(text)
    ledger.extract(text)
    out[name] = time.perf_counter() - t0
    if out[name] > {BOUND_S}:
        break
sys.stdout.write(orjson.dumps(out).decode())
"""


def test_adversarial_inputs_take_linear_time() -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=90
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"redact + extract over {SIZE:,} characters: over 90 s") from None
    assert done.returncode == 0, done.stderr
    times: dict[str, float] = orjson.loads(done.stdout)
    slow = {name: round(t, 2) for name, t in times.items() if t > BOUND_S}
    assert not slow, f"over {BOUND_S} s at {SIZE:,} characters: {slow}"
    assert set(times) == set(SHAPES)


def test_compacting_an_ordinary_paste_does_not_freeze_the_server(server: TetherServer) -> None:
    """A 28,891-character JSON number array, compacted: it froze every tenant's requests for
    34 s (the ledger's regexes held the GIL). Compaction is forced with POST …/compact once the
    paste is older than the verbatim tail; /health is probed throughout."""
    paste = orjson.dumps(list(range(6_000))).decode()  # compact JSON
    assert len(paste) == 28_891
    cid = "paste-1"
    for text in [f"here is the data: {paste}", *(f"and then {i}" for i in range(6))]:
        resp = httpx2.post(
            f"{server.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": text}]},
            headers={"X-Hermes-Session-Id": cid},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
    with health_probe(server.url) as probe:
        t0 = time.monotonic()
        resp = httpx2.post(f"{server.url}/v1/conversations/{cid}/compact", timeout=120)
        took = time.monotonic() - t0
    assert resp.status_code == 200 and resp.json()["compacted"], resp.text
    assert took < 5.0, f"compacting the paste took {took:.1f} s"
    probe.check()
