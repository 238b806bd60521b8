"""The stamped LRU (engine/cache.py): a value read outside a conversation's lock is stored only
if nothing wrote its key since the read began."""

from __future__ import annotations

from tether.coordination.lru import Lru


def test_put_if_stores_only_when_the_key_was_not_written_meanwhile() -> None:
    cache: Lru[str, str] = Lru(10, stamped=True)
    stamp = cache.stamp("a")
    assert cache.put_if("a", "read", stamp) and cache.get("a") == "read"
    stamp = cache.stamp("b")
    cache.drop("b")  # a turn's commit dropped (or replaced) the entry meanwhile
    assert not cache.put_if("b", "stale", stamp) and cache.get("b") is None
    stamp = cache.stamp("c")
    cache.put("c", "fresh")
    assert not cache.put_if("c", "stale", stamp) and cache.get("c") == "fresh"
    stamp = cache.stamp("d")
    cache.put("other", "x")  # writes to other keys do not matter
    assert cache.put_if("d", "read", stamp)


def test_forgotten_stamps_never_let_a_stale_value_in() -> None:
    cache: Lru[int, int] = Lru(10, stamped=True)
    stamp = cache.stamp(0)
    for key in range(1, 70_000):  # more keys than the stamps remembered
        cache.drop(key)
    cache.drop(0)
    for key in range(70_000, 140_000):  # key 0's stamp is forgotten too
        cache.drop(key)
    assert not cache.put_if(0, 1, stamp)


def test_an_unstamped_cache_never_stores_through_put_if() -> None:
    cache: Lru[str, str] = Lru(10)
    assert not cache.put_if("a", "x", cache.stamp("a"))
