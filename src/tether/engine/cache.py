"""In-process caches that spare a database round trip per turn, each checked against facts that
cannot go stale: a conversation id never changes, and a cached view is only used while the
conversation's (last_seq, epoch), read fresh every turn, still match."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tether.store.base import Checkpoint, Message

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """Least recently used first out, bounded by a total weight (default: 1 per entry)."""

    def __init__(self, size: int, weigh: Callable[[V], int] = lambda _: 1) -> None:
        self.size = size
        self.weigh = weigh
        self.weight = 0
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.drop(key)
        self._items[key] = value
        self.weight += self.weigh(value)
        while self.weight > self.size and self._items:
            _, old = self._items.popitem(last=False)
            self.weight -= self.weigh(old)

    def drop(self, key: K) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.weight -= self.weigh(old)


@dataclass(frozen=True, slots=True)
class CachedView:
    """A conversation's stored messages after its checkpoint's watermark, as of `last_seq`."""

    last_seq: int
    epoch: int
    checkpoint: Checkpoint | None
    messages: list[Message]

    @property
    def state(self) -> tuple[int, int]:
        return (self.last_seq, self.epoch)
