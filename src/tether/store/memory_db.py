"""What the in-memory store (`store/memory.py`) holds, and the copies in and out that make it
behave like a database (nothing shared with a caller)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from tether.model import Checkpoint, Conversation, Message, ToolStep, Turn
from tether.store.base import IdempotencyKey


def _json(value: Any) -> Any:
    """A copy of a JSON value as a database round trip gives it back."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return orjson.loads(orjson.dumps(value))


def _message(m: Message, **fields: Any) -> Message:
    return replace(
        m, content=_json(m.content), tool_calls=_json(m.tool_calls), extra=_json(m.extra), **fields
    )


def _checkpoint(cp: Checkpoint, **fields: Any) -> Checkpoint:
    return replace(cp, ledger=_json(cp.ledger), stats=_json(cp.stats), **fields)


def _turn(turn: Turn) -> Turn:
    return replace(turn, usage=_json(turn.usage), error=_json(turn.error), notes=_json(turn.notes))


@dataclass(slots=True)
class _ApiKey:
    tenant_id: str
    key_hash: str
    prefix: str
    created_at: float
    revoked_at: float | None = None


@dataclass(slots=True)
class _Recorded:
    conversation_pk: int
    turn: Turn  # its first_seq..last_seq set once committed; conversation_id never
    owner: str | None


@dataclass(slots=True)
class _Claim:
    key: IdempotencyKey
    owner: str | None
    created_at: float
    status: str = "running"
    stream: bool = False
    response: bytes | None = None
    headers: dict[str, str] | None = None
    conversation_pk: int | None = None  # the conversation its turn committed to


@dataclass(slots=True)
class MemoryDatabase:
    """What a MemoryStore holds; stores given the same one share it, like two servers on one
    database file (each with its own owner)."""

    migrated: bool = False
    last_pk: int = 0
    tenants: dict[str, float] = field(default_factory=dict)
    api_keys: list[_ApiKey] = field(default_factory=list)
    conversations: dict[int, Conversation] = field(default_factory=dict)
    by_id: dict[tuple[str, str], int] = field(default_factory=dict)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)
    messages: dict[int, list[Message]] = field(default_factory=dict)
    checkpoints: dict[int, list[Checkpoint]] = field(default_factory=dict)
    turns: dict[str, _Recorded] = field(default_factory=dict)
    claims: dict[tuple[str, str, str], _Claim] = field(default_factory=dict)
    tool_steps: dict[tuple[str, str], ToolStep] = field(default_factory=dict)
