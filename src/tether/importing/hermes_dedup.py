"""One conversation out of Hermes sessions that repeat each other.

Hermes compacts by writing a new generation of rows: copies of the first turns (the protected
head), one summary row, copies of the recent turns (the protected tail), then the new rows. A
compression child session starts that way; an in-place compaction appends it to the same
session. Either way, read in row order a session is

    … rows … [head copies] SUMMARY [tail copies] … new rows … [head copies] SUMMARY …

and the conversation is every row that is not a copy: the head copies before a summary are
the conversation's first messages again, the tail copies after it are its last ones. Each
summary becomes a checkpoint standing in for the messages before its tail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tether.importing.hermes_rows import Item, Key
from tether.model import Message
from tether.store.base import ImportedCheckpoint


@dataclass(slots=True)
class Built:
    """A conversation as it grows, session by session: its messages (seq 1..n), their keys and
    the checkpoints the summaries became."""

    messages: list[Message] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    checkpoints: list[ImportedCheckpoint] = field(default_factory=list)

    def prefix(self, through: int) -> Built:
        """A fork's start: messages 1..through and the checkpoints within them."""
        return Built(
            messages=self.messages[:through],
            keys=self.keys[:through],
            checkpoints=[c for c in self.checkpoints if c.covers_through_seq <= through],
        )


def extend(built: Built, items: Sequence[Item], model: str | None) -> list[int]:
    """Append a session's items to the conversation, leaving out the copies. Returns, for each
    item, the seq of the conversation message it is (a copy: its original's; a summary: 0)."""
    keys = [it.key for it in items]
    seqs = [0] * len(items)
    bounds = [i for i, it in enumerate(items) if it.summary is not None]
    start = 0
    pending: Item | None = None
    for end in [*bounds, len(items)]:
        i = start
        if pending is not None:  # after a summary: the tail copies, then what is new
            n = len(built.keys)
            k = tail_overlap(built.keys, keys[i:end])
            seqs[i : i + k] = range(n - k + 1, n + 1)
            _checkpoint(built, pending, n - k, model)
            i += k
        h = head_overlap(built.keys, keys[i:end]) if end < len(items) else 0
        for j in range(i, end - h):
            seqs[j] = _append(built, items[j])
        seqs[end - h : end] = range(1, h + 1)
        pending = items[end] if end < len(items) else None
        start = end + 1
    return seqs


def _append(built: Built, item: Item) -> int:
    message = item.message
    assert message is not None  # only summaries have none, and they bound the pieces
    message.seq = len(built.messages) + 1
    built.messages.append(message)
    built.keys.append(item.key)
    return message.seq


def _checkpoint(built: Built, summary: Item, covers: int, model: str | None) -> None:
    """The summary stands in for messages 1..covers. A second summary of the same range
    replaces the first; one that would cover less than the one before is left out."""
    if covers < 1 or summary.summary is None:
        return
    checkpoint = ImportedCheckpoint(
        covers_through_seq=covers,
        summary=summary.summary,
        created_at=summary.created_at,
        model=model,
    )
    last = built.checkpoints[-1].covers_through_seq if built.checkpoints else 0
    if covers == last:
        built.checkpoints[-1] = checkpoint
    elif covers > last:
        built.checkpoints.append(checkpoint)


def tail_overlap(conv: Sequence[Key], piece: Sequence[Key]) -> int:
    """The longest k such that the piece starts with the conversation's last k messages."""
    n = len(conv)
    if not piece or not n:
        return 0
    first = piece[0]
    for k in range(min(n, len(piece)), 0, -1):
        if conv[n - k] == first and all(conv[n - k + t] == piece[t] for t in range(1, k)):
            return k
    return 0


def head_overlap(conv: Sequence[Key], piece: Sequence[Key]) -> int:
    """The longest h such that the piece ends with the conversation's first h messages, the
    conversation being what comes before those h (the messages so far and the piece's start)."""
    if not piece:
        return 0
    n, m = len(conv), len(piece)
    first = conv[0] if conv else piece[0]

    def ref(t: int) -> Key:
        return conv[t] if t < n else piece[t - n]

    for j in range(m):  # the head starts at piece[j]: the earliest start is the longest head
        h = m - j
        if n + j < h or piece[j] != first:
            continue
        if all(piece[j + t] == ref(t) for t in range(1, h)):
            return h
    return 0


def common_prefix(a: Sequence[Key], b: Sequence[Key]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
