"""When to compact: the model's view against `threshold × (window − reserved output)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CompactionMode = Literal["auto", "off", "now"]
MIN_SAVING = 0.10  # anti-thrash: two compactions in a row saving less than this stop compaction


@dataclass(frozen=True, slots=True)
class Budget:
    window: int  # the model's context window, tokens
    reserved: int  # kept free for the reply
    threshold: float  # fraction of (window - reserved) that triggers compaction
    tail_ratio: float  # share of the limit kept verbatim as the recent tail

    @property
    def usable(self) -> int:
        """The most prompt tokens the model accepts."""
        return max(1, self.window - self.reserved)

    @property
    def limit(self) -> int:
        """Compact when the view exceeds this."""
        return max(1, int(self.threshold * self.usable))

    @property
    def tail_tokens(self) -> int:
        return max(1, int(self.tail_ratio * self.limit))

    def summary_tokens(self, span_tokens: int) -> int:
        """Budget for a summary of `span_tokens`: 20% of the span, within [128, 15% of limit]."""
        ceiling = max(128, min(8000, int(0.15 * self.limit)))
        return max(128, min(ceiling, span_tokens // 5))


def should_compact(view_tokens: int, budget: Budget, mode: CompactionMode) -> bool:
    if mode == "now":
        return True
    if mode == "off":
        return False
    return view_tokens > budget.limit


def thrashing(recent_savings: list[float]) -> bool:
    """True when the last two compactions each saved less than MIN_SAVING."""
    return len(recent_savings) >= 2 and all(s < MIN_SAVING for s in recent_savings[-2:])
