"""Where a turn commits and what the model sees (its `Target`), and the token budget the view is
measured against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.compaction.policy import Budget
from tether.compaction.view import estimate, render, system_block, tail_messages
from tether.config import Settings
from tether.engine.cache import CachedView
from tether.engine.merge import MergePlan
from tether.model import Checkpoint, Conversation, Message
from tether.store.base import NewConversation


@dataclass(slots=True)
class Target:
    """Where the turn commits and what the model sees."""

    tenant_id: str
    conv: Conversation | None  # the stored conversation (a fork's parent)
    creates: NewConversation | None  # the conversation the turn creates (maybe a fork)
    plan: MergePlan
    checkpoint: Checkpoint | None  # the checkpoint the view is built on
    model: str
    stored: CachedView | None = None  # the stored part of the view, ready to send
    base_hash: bytes | None = None  # the transcript hash the turn's messages extend (None:
    base_len: int | None = None  # not known, see engine/fingerprint.py)

    @property
    def conversation_id(self) -> str:
        if self.creates is not None:
            return self.creates.id
        assert self.conv is not None
        return self.conv.id

    @property
    def forked_from(self) -> tuple[str, int] | None:
        if self.creates is not None and self.conv is not None:
            return (self.conv.id, self.plan.fork_seq or 0)
        return None

    @property
    def epoch(self) -> int:
        """The epoch the view is built on (a fork renumbers an inherited checkpoint as 1)."""
        if self.checkpoint is None:
            return 0
        return 1 if self.creates is not None else self.checkpoint.epoch

    @property
    def can_compact(self) -> bool:
        return self.conv is not None and self.creates is None

    def view_messages(self) -> tuple[str | None, list[Message]]:
        system = system_block(self.plan.system_prompt, self.checkpoint)
        kept = tail_messages(self.plan.history, self.checkpoint)
        return system, [*kept, *(m for m in self.plan.new if m.role != "system")]

    def view(self) -> list[dict[str, Any]]:
        return render(*self.view_messages())

    def prompt_tokens(self) -> int:
        """The upstream's reported prompt size of the last turn plus what was added since, when
        the view is still built the same way; else an offline estimate of the whole view."""
        system, messages = self.view_messages()
        conv = self.conv
        if (
            conv is not None
            and self.creates is None
            and conv.usage_prompt_tokens
            and conv.usage_through_seq is not None
            and conv.usage_epoch == conv.epoch
            and not self.plan.system_changed
        ):
            since = sum(m.tokens for m in messages if m.seq > conv.usage_through_seq or not m.seq)
            return conv.usage_prompt_tokens + since
        return estimate(system, messages)


def budget_for(
    settings: Settings, model: str, params: dict[str, Any], learned: int | None = None
) -> Budget:
    """The budget for a model: configured window > learned from the upstream > default."""
    window = settings.model_context_windows.get(model) or learned or settings.default_context_window
    max_tokens = params.get("max_completion_tokens") or params.get("max_tokens")
    if isinstance(max_tokens, int) and 0 < max_tokens < window:
        reserved = max_tokens
    else:
        reserved = min(settings.reserved_output_tokens, window // 4)
    threshold = settings.model_compaction_thresholds.get(model, settings.compaction_threshold)
    return Budget(window, reserved, threshold, settings.compaction_tail_ratio)
