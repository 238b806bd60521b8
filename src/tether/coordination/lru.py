"""A bounded least-recently-used map, optionally stamped (each key's last write numbered), so a
value read outside a lock is stored only if nothing wrote its key meanwhile."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

_STAMPS = 65536  # keys whose last write a stamped cache remembers
K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """Least recently used first out, bounded by a total weight (default: 1 per entry)."""

    def __init__(
        self, size: int, weigh: Callable[[V], int] = lambda _: 1, stamped: bool = False
    ) -> None:
        self.size = size
        self.weigh = weigh
        self.weight = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        # stamped: each key's last write (put or drop) as a number that only grows, so a value
        # read outside a lock is stored only if nothing wrote its key meanwhile (`put_if`)
        self._stamped = stamped
        self._writes: OrderedDict[K, int] = OrderedDict()
        self._seq = 0
        self._floor = 0  # the newest write forgotten (a bounded record)

    def stamp(self, key: K) -> int:
        return self._writes.get(key, self._floor)

    def put_if(self, key: K, value: V, stamp: int) -> bool:
        """Store `value` unless `key` was written since `stamp` or holds a value already."""
        if not self._stamped or key in self._items or self.stamp(key) != stamp:
            return False
        self.put(key, value)
        return True

    def _wrote(self, key: K) -> None:
        if self._stamped:
            self._seq += 1
            self._writes.pop(key, None)
            self._writes[key] = self._seq
            if len(self._writes) > _STAMPS:
                _, self._floor = self._writes.popitem(last=False)

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.drop(key)
        self._wrote(key)
        self._items[key] = value
        self.weight += self.weigh(value)
        while self.weight > self.size and self._items:
            _, old = self._items.popitem(last=False)
            self.weight -= self.weigh(old)

    def drop_where(self, doomed: Callable[[K, V], bool]) -> int:
        """Drop every entry `doomed(key, value)` picks (a scan: for rare events); how many."""
        keys = [k for k, v in self._items.items() if doomed(k, v)]
        for k in keys:
            self.drop(k)
        return len(keys)

    def drop(self, key: K) -> None:
        self._wrote(key)
        old = self._items.pop(key, None)
        if old is not None:
            self.weight -= self.weigh(old)
