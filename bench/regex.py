"""The ledger's identifier extraction and the secret redaction over adversarial text: how the
time grows with the length of the input. Every input is one shape repeated to N characters
(long runs, number lists, URLs, key-looking prefixes, random bytes); each is timed at N and 2N
and at the largest size, and the scaling exponent log2(t(2N)/t(N)) is printed: 1 is linear,
2 quadratic (the target is linear).

Run alone: `.venv/bin/python -m bench.regex [--max 1000000]`.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from tether.compaction import ledger

TARGET_EXPONENT = 1.3  # measured exponents above this are reported as not linear


def _random_text(n: int) -> str:
    rng = random.Random(7)
    return bytes(rng.randrange(256) for _ in range(n)).decode("latin-1")


def _repeat(unit: str) -> Callable[[int], str]:
    def make(n: int) -> str:
        return (unit * (n // len(unit) + 1))[:n]

    return make


# name → text of n characters. Each shape broke a regex once (or could have).
SHAPES: dict[str, Callable[[int], str]] = {
    "one run 'aaaa…'": _repeat("a"),
    "number list '1,2,3,…' (compact JSON)": lambda n: ",".join(map(str, range(n)))[:n],
    "number list '1, 2, 3, …'": lambda n: ", ".join(map(str, range(n)))[:n],
    "dotted run 'a.a.a.…'": _repeat("a."),
    "hyphen run 'a-a-a-…'": _repeat("a-"),
    "underscore ids 'a1_b2_…'": _repeat("a1_b2_"),
    "long URL 'http://x/aaaa…'": lambda n: "http://example.com/" + "a" * n,
    "URLs back to back": _repeat("http://x.io/."),
    "key=value prefixes 'password=\"…'": _repeat('password="'),
    "private key BEGINs without END": _repeat("-----BEGIN PRIVATE KEY-----\n"),
    "bearer with no token": _repeat("Bearer "),
    "windows paths 'C:\\a a a…'": lambda n: "C:\\" + "a " * (n // 2),
    "unix path '/aaaa…' (one segment)": lambda n: "/" + "a" * n,
    "emails without @ 'a.b+c-…'": _repeat("a.b+c-"),
    "random bytes": _random_text,
}


@dataclass
class Row:
    shape: str
    n: int
    redact_ms: float
    extract_ms: float
    exponent: float  # log2(t(2n)/t(n)) of redact + extract, from the two smaller sizes
    largest_n: int
    largest_ms: float

    @property
    def linear(self) -> bool:
        return self.exponent <= TARGET_EXPONENT


def _time(fn: Callable[[str], object], text: str, budget_s: float) -> float:
    """Best of a few runs, in ms (fewer runs for slow ones)."""
    best = math.inf
    spent = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        fn(text)
        elapsed = time.perf_counter() - t0
        best = min(best, elapsed)
        spent += elapsed
        if spent > budget_s:
            break
    return best * 1000


def measure(shape: str, n: int, largest: int, budget_s: float = 2.0) -> Row:
    make = SHAPES[shape]
    small, double = make(n), make(2 * n)
    red1, ext1 = _time(ledger.redact, small, budget_s), _time(ledger.extract, small, budget_s)
    red2, ext2 = _time(ledger.redact, double, budget_s), _time(ledger.extract, double, budget_s)
    exponent = math.log2(max(red2 + ext2, 1e-3) / max(red1 + ext1, 1e-3))
    big = make(largest)
    total = _time(lambda t: (ledger.redact(t), ledger.extract(t)), big, budget_s)
    return Row(shape, n, red1, ext1, exponent, largest, total)


def run_all(n: int = 20_000, largest: int = 1_000_000) -> list[Row]:
    return [measure(shape, n, largest) for shape in SHAPES]


def table(rows: list[Row]) -> list[str]:
    out = [
        "| input | redact ms at N | extract ms at N | exponent (N → 2N) | ms at the largest |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        flag = "" if r.linear else " ⚠ not linear"
        out.append(
            f"| {r.shape} | {r.redact_ms:,.1f} | {r.extract_ms:,.1f} | {r.exponent:.2f}{flag} "
            f"| {r.largest_ms:,.0f} ({r.largest_n:,} chars) |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=20_000, help="the smaller size (N)")
    parser.add_argument("--max", type=int, default=1_000_000, help="the largest size")
    parser.add_argument("--shape", action="append", help="only these shapes (repeatable)")
    args = parser.parse_args()
    shapes = args.shape or list(SHAPES)
    print(f"N = {args.n:,} characters; exponent = log2(t(2N) / t(N)), 1 = linear, 2 = quadratic")
    rows = []
    for shape in shapes:
        row = measure(shape, args.n, args.max)
        rows.append(row)
        print(
            f"  {shape}: redact {row.redact_ms:.1f} ms, extract {row.extract_ms:.1f} ms, "
            f"exponent {row.exponent:.2f}, {row.largest_n:,} chars {row.largest_ms:,.0f} ms",
            flush=True,
        )
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
