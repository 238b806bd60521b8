"""Server-minted conversation and turn ids cannot be guessed (reliability matrix F3): 100,000
of each are unique, carry 128 random bits each, pass the monobit and runs tests of NIST SP
800-22, and show no sequential structure (no counter, no shared prefix, no correlation between
neighbours)."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

import pytest

from tether.engine.ids import SERVER_PREFIX, mint_conversation_id, mint_turn_id

N = 100_000
BITS = 128
Z = 5.0  # |z| beyond 5 standard deviations: a false alarm about once in 1.7 million runs


KINDS = {SERVER_PREFIX: mint_conversation_id, "turn_": mint_turn_id}


@pytest.fixture(scope="module", params=list(KINDS))
def prefix(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def ids(prefix: str) -> list[str]:
    return [KINDS[prefix]() for _ in range(N)]


@pytest.fixture(scope="module")
def values(ids: list[str], prefix: str) -> list[int]:
    return [int(i[len(prefix) :], 16) for i in ids]


def test_unique_and_128_bits_wide(ids: list[str], prefix: str) -> None:
    assert len(set(ids)) == N
    shape = re.compile(rf"{prefix}[0-9a-f]{{{BITS // 4}}}")
    assert all(shape.fullmatch(i) for i in ids), next(i for i in ids if not shape.fullmatch(i))


def test_every_bit_position_is_random(ids: list[str], prefix: str) -> None:
    """Each of the 128 positions is 1 in half of the ids: none is fixed, so all 128 carry
    entropy (a timestamp or a counter's high bits would be stuck)."""
    raw = [bytes.fromhex(i[len(prefix) :]) for i in ids]
    limit = Z * 0.5 / math.sqrt(N)
    for byte in range(BITS // 8):
        seen = Counter(r[byte] for r in raw)
        for bit in range(8):
            ones = sum(n for value, n in seen.items() if value >> bit & 1)
            assert abs(ones / N - 0.5) < limit, (byte, bit, ones)


def test_monobit_and_runs(ids: list[str], prefix: str) -> None:
    """NIST SP 800-22 frequency and runs tests over all 12.8 million bits, concatenated."""
    stream = int("".join(i[len(prefix) :] for i in ids), 16)
    n = N * BITS
    ones = stream.bit_count()
    assert abs(2 * ones - n) / math.sqrt(n) < Z, ones
    pi = ones / n
    # a run ends wherever a bit differs from the next one (the leading bits are within n)
    changes = (stream ^ (stream >> 1)).bit_count() - (1 if stream >> (n - 1) & 1 else 0)
    runs = changes + 1
    expected = 2 * n * pi * (1 - pi)
    assert abs(runs - expected) / (2 * math.sqrt(n) * pi * (1 - pi)) < Z, (runs, expected)


def test_no_sequential_structure(values: list[int]) -> None:
    pairs = list(itertools.pairwise(values))
    m = len(pairs)
    # a counter or a clock would make each id larger than the one before
    rising = sum(b > a for a, b in pairs)
    assert abs(rising / m - 0.5) < Z * 0.5 / math.sqrt(m), rising
    # neighbours differ in half their bits (64 of 128; sd 5.66 per pair)
    flipped = sum((a ^ b).bit_count() for a, b in pairs) / m
    assert abs(flipped - BITS / 2) < Z * math.sqrt(BITS / 4) / math.sqrt(m), flipped
    # no fixed step between neighbours
    assert len({b - a for a, b in pairs}) == m
    # neighbours share no more leading bits than chance (mean 1, the longest about log2(m))
    shared = [BITS - (a ^ b).bit_length() for a, b in pairs]
    assert sum(shared) / m < 1.1, sum(shared) / m
    assert max(shared) < 40, max(shared)
