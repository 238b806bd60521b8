"""In-process caches that spare a database round trip per turn.

- A conversation id never changes, so (tenant, any id it was known by) → its id cannot go stale.
- A conversation's view (its row, latest checkpoint and the messages after the checkpoint) is
  kept after every turn that commits here. The serving process is the only writer of
  conversation state (SQLite: one `tether serve` per file, held by a file lock), and every write
  that changes it passes through the engine: a turn's commit updates the entry; a checkpoint, a
  fork or a failed commit drops it. So a cached view is used without reading the database at
  all. If it were ever stale, the commit's check of the conversation's last seq would refuse
  the turn (409) and drop the entry, and the next turn reads it afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tether.compaction.view import render, tail_messages
from tether.engine.fingerprint import shapes_of
from tether.engine.validate import pending_after
from tether.model import Checkpoint, Conversation, Message


@dataclass(frozen=True, slots=True)
class CachedView:
    """A conversation as of its last commit: its row, its latest checkpoint, its stored messages
    after the checkpoint's watermark, and what the model sees of them ready to send: their JSON
    (comma-separated objects, no brackets) and the tool calls still unanswered at their end."""

    conv: Conversation
    checkpoint: Checkpoint | None
    messages: list[Message]
    rendered: bytes
    pending: frozenset[str]
    # the history messages' roles and plain contents (engine/fingerprint.py `shapes_of`), so a
    # full-history request is compared with the transcript in a few list comparisons
    shapes: tuple[list[str], list[object]]

    @property
    def state(self) -> tuple[int, int]:
        return (self.conv.last_seq, self.conv.epoch)


def cached_view(
    conv: Conversation, checkpoint: Checkpoint | None, messages: list[Message]
) -> CachedView:
    view = render(None, tail_messages(messages, checkpoint))
    return CachedView(
        conv, checkpoint, messages, _join(view), pending_after(view), shapes_of(messages)
    )


def extended(cached: CachedView, conv: Conversation, added: list[Message]) -> CachedView:
    """`cached` after a turn appended `added` (numbered) and left the conversation as `conv`.
    Pruning only rewrites messages up to its watermark, which new messages are past."""
    view = render(None, added)
    rendered = b",".join(p for p in (cached.rendered, _join(view)) if p)
    pending = pending_after(view) if view else cached.pending
    roles, contents = shapes_of(added)
    shapes = ([*cached.shapes[0], *roles], [*cached.shapes[1], *contents])
    return CachedView(
        conv, cached.checkpoint, [*cached.messages, *added], rendered, pending, shapes
    )


def _join(view: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(view)[1:-1]
