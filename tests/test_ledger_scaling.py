"""The ledger's extraction and the secret redaction stay linear over adversarial text (issue 12:
`"a" * 20_000` took 30 s in `redact`, a 28,891-character JSON number array froze the server for
34 s — the regex engine holds the GIL). Every shape of bench/regex.py at 300,000 characters must
take under 3 s (about 0.2 s each when linear); a quadratic pattern takes hours. The work runs in
a child process, so a regression fails at the timeout instead of hanging the suite."""

from __future__ import annotations

import subprocess
import sys

import orjson
from bench.regex import SHAPES

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
