"""Managing conversations outside a turn, for the REST API, the dashboard and the CLI alike:
list, describe, update, delete, fork, append without the model. Each change that touches the
transcript takes the conversation's turn lock (never across anything slow), so it never
interleaves with a turn; each drops the cached view it makes stale."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from tether.engine import idempotency
from tether.engine.export import export_json, export_markdown
from tether.engine.fingerprint import chain, is_history
from tether.engine.ids import check_conversation_id, mint_conversation_id, mint_turn_id
from tether.engine.inspect import context_report
from tether.engine.request import etag, matches
from tether.engine.service import Engine
from tether.engine.validate import pending_after, validate_sequence
from tether.errors import TetherError
from tether.model import Checkpoint, Conversation, Message, Turn
from tether.store.base import ConversationFilter, IdempotencyKey, StoredResponse, TurnCommit
from tether.store.errors import ConflictError
from tether.upstream.wire import chat_message

PENDING_LOOKBACK = 256  # messages read back to find tool calls an append may answer


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    items: list[Conversation]
    has_more: bool


def not_found(conversation_id: str) -> TetherError:
    return TetherError(
        404, "conversation_not_found", f"conversation {conversation_id!r} does not exist"
    )


async def get(engine: Engine, tenant_id: str, conversation_id: str) -> Conversation:
    """The conversation this id (or an alias) names in the tenant; 404 otherwise."""
    check_conversation_id(conversation_id, "conversation_id")
    conv = await engine.store.resolve(tenant_id, conversation_id)
    if conv is None:
        raise not_found(conversation_id)
    return conv


async def list_page(
    engine: Engine,
    tenant_id: str,
    *,
    limit: int = 20,
    after: str | None = None,
    filters: ConversationFilter | None = None,
) -> Page:
    """Newest activity first; `after`: the last id of the previous page."""
    last = None
    if after is not None:
        last = await engine.store.resolve(tenant_id, after)
        if last is None:
            raise TetherError(
                404,
                "conversation_not_found",
                f"after: conversation {after!r} does not exist",
                param="after",
            )
    rows = await engine.store.list_conversations(tenant_id, limit + 1, after=last, filters=filters)
    return Page(items=rows[:limit], has_more=len(rows) > limit)


def checkpoint_summary(c: Checkpoint) -> dict[str, Any]:
    return {
        "epoch": c.epoch,
        "covers_from_seq": 1,
        "covers_through_seq": c.covers_through_seq,
        "tokens_before": c.tokens_before,
        "tokens_after": c.tokens_after,
        "model": c.model,
        "created_at": c.created_at,
        "summary": c.summary,
    }


async def detail(engine: Engine, conv: Conversation) -> dict[str, Any]:
    """What GET /v1/conversations/{id} adds to the record: title, metadata, counts, every
    checkpoint, the aliases and the context's current use."""
    report = await context_report(engine, conv, False)
    checkpoints = await engine.store.list_checkpoints(conv.pk)
    return {
        "metadata": conv.metadata or {},
        "message_count": conv.last_seq,
        "aliases": await engine.store.list_aliases(conv.pk),
        "checkpoints": [checkpoint_summary(c) for c in checkpoints],
        "context": {
            key: report[key]
            for key in (
                "tokens",
                "window",
                "threshold",
                "compact_above_tokens",
                "messages_in_view",
                "last_reported_prompt_tokens",
            )
        },
    }


def _stale(version: int, detail: str) -> TetherError:
    return TetherError(412, "precondition_failed", detail, headers={"ETag": etag(version)})


def _precondition(conv: Conversation, if_match: str | None) -> None:
    if if_match is not None and not matches(if_match, conv.last_seq):
        raise _stale(
            conv.last_seq,
            f"the conversation is at version {etag(conv.last_seq)}, not {if_match}; "
            "reload it and retry",
        )


async def update(
    engine: Engine,
    conv: Conversation,
    *,
    title: str | None = None,
    clear_title: bool = False,
    metadata: dict[str, str] | None = None,
    if_match: str | None = None,
) -> Conversation:
    if if_match is not None and not if_match.strip():
        if_match = None  # an empty header names no version
    _precondition(conv, if_match)
    try:
        return await engine.store.update_conversation(
            conv.pk,
            title=title,
            clear_title=clear_title,
            metadata=metadata,
            expected_last_seq=conv.last_seq if if_match is not None else None,
        )
    except ConflictError as exc:
        now = await engine.store.resolve(conv.tenant_id, conv.id)
        raise _stale(now.last_seq if now else conv.last_seq, str(exc)) from exc


async def delete(engine: Engine, conv: Conversation) -> dict[str, int]:
    """Remove it and all it owns; 409 while a turn runs on it."""
    async with engine.coordinator.hold(conv.tenant_id, conv.id, reject=True):
        removed = await engine.store.delete_conversation(conv.pk)
    engine.views.drop((conv.tenant_id, conv.id))
    # the ids (its own, its aliases) that resolved to it name nothing now: a next turn on one
    # starts a conversation of that name
    engine.deps.canonical.drop_where(lambda k, v: k[0] == conv.tenant_id and v == conv.id)
    return removed


async def fork(
    engine: Engine, conv: Conversation, at_seq: int, new_id: str | None = None
) -> Conversation:
    if not 1 <= at_seq <= conv.last_seq:
        raise TetherError(
            400,
            "invalid_request",
            f"at_seq must be a seq from 1 to {conv.last_seq}",
            param="at_seq",
        )
    target = check_conversation_id(new_id, "id") if new_id else mint_conversation_id()
    try:
        return await engine.store.fork_conversation(conv.tenant_id, conv.pk, at_seq, target)
    except ConflictError as exc:
        if await engine.store.resolve(conv.tenant_id, target) is not None:
            raise TetherError(
                409, "conversation_exists", f"conversation {target!r} already exists", param="id"
            ) from exc
        raise TetherError(409, "conversation_busy", str(exc)) from exc


async def append(
    engine: Engine,
    conv: Conversation,
    messages: list[Message],
    key: IdempotencyKey | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Store `messages` at the end of the transcript without calling the model, in one
    transaction (with a keyed request's response); the JSON body and headers to answer."""
    if key is not None:
        retention = engine.settings.idempotency_retention
        record = await idempotency.claim(engine.store, key, retention)
        if record is not None:
            body, headers = idempotency.replayed(record)
            return body[0], headers
    try:
        async with engine.coordinator.hold(conv.tenant_id, conv.id):
            return await _append_locked(engine, conv, messages, key)
    except BaseException:
        await idempotency.release(engine.store, key)
        raise


async def _append_locked(
    engine: Engine, conv: Conversation, messages: list[Message], key: IdempotencyKey | None
) -> tuple[bytes, dict[str, str]]:
    current = await engine.store.resolve(conv.tenant_id, conv.id)
    if current is None:
        raise not_found(conv.id)
    tail = await engine.store.load_messages(
        current.pk, after_seq=max(0, current.last_seq - PENDING_LOOKBACK)
    )
    validate_sequence(
        [chat_message(m) for m in messages], pending_after([chat_message(m) for m in tail])
    )
    now = time.time()
    turn = Turn(
        id=mint_turn_id(),
        status="completed",
        model=None,
        started_at=now,
        finished_at=now,
        notes={"appended": len(messages)},
    )
    first, last = current.last_seq + 1, current.last_seq + len(messages)
    body = orjson.dumps(
        {
            "object": "conversation.messages.appended",
            "conversation_id": current.id,
            "turn_id": turn.id,
            "first_seq": first,
            "last_seq": last,
        }
    )
    headers = {"X-Tether-Conversation": current.id, "ETag": etag(last)}
    history: dict[str, Any] = {}
    if current.history_hash is not None and current.history_len is not None:
        history = {
            "history_hash": chain(current.history_hash, messages),
            "history_len": current.history_len + sum(1 for m in messages if is_history(m)),
        }
    try:
        await engine.store.commit_turn(
            TurnCommit(
                tenant_id=current.tenant_id,
                turn=turn,
                messages=messages,
                conversation_pk=current.pk,
                expected_last_seq=current.last_seq,
                system_prompt=current.system_prompt,
                view_epoch=current.epoch,
                response=None if key is None else StoredResponse(key, False, body, headers),
                **history,
            )
        )
    finally:
        engine.views.drop((current.tenant_id, current.id))
    return body, headers


__all__ = ["Page", "append", "delete", "detail", "export_json", "export_markdown", "fork", "get"]
__all__ += ["list_page", "update"]
