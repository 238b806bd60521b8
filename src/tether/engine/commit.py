"""The turn's commit: its messages, its record, its transcript hash and (keyed) its response, in
one transaction; then the cached view is extended with what was written."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from tether.engine import idempotency
from tether.engine.cache import extended
from tether.engine.events import Finished
from tether.engine.fingerprint import chain, is_history
from tether.engine.target import Target
from tether.engine.titles import title_later
from tether.engine.validate import validate_sequence
from tether.errors import TetherError
from tether.model import Conversation, Message
from tether.store.base import StoredResponse, TurnCommit
from tether.store.errors import ConflictError
from tether.upstream.wire import chat_message

if TYPE_CHECKING:
    from tether.engine.turn import TurnRun

log = structlog.get_logger("tether.turn")


async def commit(
    run: TurnRun,
    finished: Finished,
    pending: frozenset[str],
    tail: list[bytes],
    produced: list[Message],
) -> None:
    """Store the turn that `finished` describes: the request's new messages, then `produced`
    (the tool rounds' messages and the answer). `tail`: the payloads its end renders to (a
    keyed turn stores its whole response with the commit)."""
    target, turn = run.target, run.record
    assert target is not None
    # the view was checked before the call
    validate_sequence([chat_message(m) for m in produced], pending)
    turn.status = "completed"
    turn.finished_at = time.time()
    conv = target.conv
    stored = _keyed_response(run, finished, tail)
    run.committing = True  # from here on the turn completes: a cancel is too late
    if not run.req.store:
        log.info("turn.unstored", turn_id=turn.id, messages=len(target.plan.new) + len(produced))
        return
    try:
        work = run.deps.store.commit_turn(
            TurnCommit(
                tenant_id=target.tenant_id,
                turn=turn,
                messages=[*target.plan.new, *produced],
                conversation_pk=None if target.creates or conv is None else conv.pk,
                new_conversation=target.creates,
                expected_last_seq=conv.last_seq if conv and not target.creates else 0,
                system_prompt=target.plan.system_prompt,
                system_changed=target.plan.system_changed,
                view_epoch=target.epoch,
                inherit_checkpoint=target.checkpoint if target.forked_from else None,
                response=stored,
                **history_after(target, produced),
            )
        )
        updated = await asyncio.shield(work)
    except ConflictError as exc:
        run.committing = False
        run.deps.views.drop((target.tenant_id, target.conversation_id))
        raise TetherError(
            409,
            "conversation_busy",
            f"the conversation changed during the turn: {exc}",
            headers={"Retry-After": "1"},
        ) from exc
    _remember(run, updated, produced)
    log.info(
        "turn.committed",
        conversation=target.conversation_id,
        turn_id=turn.id,
        messages=len(target.plan.new) + len(produced),
        compacted=turn.compacted,
        ms=round((turn.finished_at - turn.started_at) * 1000, 1),
    )


def _keyed_response(run: TurnRun, finished: Finished, tail: list[bytes]) -> StoredResponse | None:
    """What a keyed turn stores of its answer, to replay it."""
    if run.req.idempotency is None:
        return None
    headers = run.req.projection.headers(finished.info)
    return idempotency.stored(run.req.idempotency, run.req.stream, [*run.out.log, *tail], headers)


def history_after(target: Target, produced: list[Message]) -> dict[str, Any]:
    """The transcript's hash and length once the turn's messages are appended."""
    if target.base_hash is None or target.base_len is None:
        return {}
    added = [*target.plan.new, *produced]
    return {
        "history_hash": chain(target.base_hash, added),
        "history_len": target.base_len + sum(1 for m in added if is_history(m)),
    }


def _remember(run: TurnRun, updated: Conversation, produced: list[Message]) -> None:
    """Keep the conversation's view in memory with the turn's messages appended (and, for a
    conversation this turn created, have it named if TETHER_TITLES=auto)."""
    target = run.target
    assert target is not None
    if target.creates is not None and target.creates.forked_from_pk is None:
        title_later(run.deps, updated, [*target.plan.new, *produced])
    key = (target.tenant_id, updated.id)
    views = run.deps.views
    cached = views.get(key)
    conv = target.conv
    if (
        target.creates
        or conv is None
        or cached is None
        or cached.state != (conv.last_seq, conv.epoch)
        or updated.epoch != conv.epoch
    ):
        # new, forked or compacted meanwhile: the next turn reads it
        views.drop(key)
        return
    added = [
        replace(m, seq=conv.last_seq + 1 + i, turn_id=run.record.id)
        for i, m in enumerate([*target.plan.new, *produced])
    ]
    views.put(key, extended(cached, updated, added))
