"""What a turn makes of the upstream's reply besides the message: the fields the response
schema requires, usage where the upstream sent none, stream chunk metadata, and the
transcript hash once the reply is appended."""

from __future__ import annotations

import time
from typing import Any

from tether.engine.assemble import Assembled
from tether.engine.context import Target
from tether.engine.fingerprint import chain, is_history
from tether.model import Message, TurnRecord


def chunk_meta(acc: Assembled, turn: TurnRecord) -> dict[str, Any]:
    return {
        "id": acc.chunk_id,
        "object": "chat.completion.chunk",
        "created": acc.created or int(time.time()),
        "model": acc.model or turn.model,
    }


def estimated_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "estimated": True,  # Tether's offline counts (docs/tokens.md), not the upstream's
    }


def fill_required(response: dict[str, Any]) -> None:
    """Fields the Chat Completions response schema requires that an upstream left out (many
    OpenAI-compatible servers omit `refusal` and `logprobs`): typed clients expect them."""
    for choice in response.get("choices") or ():
        if isinstance(choice, dict):
            choice.setdefault("logprobs", None)
            message = choice.get("message")
            if isinstance(message, dict):
                message.setdefault("content", None)
                message.setdefault("refusal", None)


def history_after(target: Target, reply: Message) -> dict[str, Any]:
    """The transcript's hash and length once the turn's messages are appended."""
    if target.base_hash is None or target.base_len is None:
        return {}
    added = [*target.plan.new, reply]
    return {
        "history_hash": chain(target.base_hash, added),
        "history_len": target.base_len + sum(1 for m in added if is_history(m)),
    }
