"""`POST /v1/responses/compact`: compaction as an API. With `previous_response_id` (or
`conversation`) it compacts that stored conversation — a Tether checkpoint, as `POST
/v1/conversations/{id}/compact` makes (`input` given too is appended first, without the model)
— and answers the user messages the model still sees verbatim, then a `compaction` item naming
the conversation. With only `input`, nothing is stored: the summariser summarises the input and
the item carries the summary. Either item, given back as input to `POST /v1/responses`,
continues from the summary (protocols/responses_compact.py)."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tether.api.access import state_of, tenant_of
from tether.api.body import read_json_object
from tether.api.jsonbody import json_response
from tether.api.models_manage import CompactRequest, parsed
from tether.api.responses import previous_turn
from tether.api.state import AppState
from tether.compaction.view import tail_messages
from tether.engine import conversations
from tether.engine.ids import check_conversation_id
from tether.engine.inspect import compact_conversation
from tether.engine.messages import with_tokens
from tether.engine.summarise import summarise
from tether.errors import TetherError
from tether.model import Conversation, Message
from tether.protocols import responses_compact as wire
from tether.protocols.responses_items import input_items, messages_from_input


def _bad(message: str, param: str, code: str = "invalid_request") -> TetherError:
    return TetherError(400, code, message, param=param)


def _user_items(messages: list[Message], rid: str) -> list[dict[str, Any]]:
    return input_items([m for m in messages if m.role == "user"], "turn_" + rid)


async def _stored(state: AppState, tenant: str, data: dict[str, Any]) -> Conversation | None:
    """The stored conversation the request names (`previous_response_id` or `conversation`)."""
    named = data.get("conversation")
    if isinstance(named, dict):
        named = named.get("id")
    if named is not None:
        if not isinstance(named, str):
            raise _bad("conversation is an id", "conversation")
        return await conversations.get(
            state.engine, tenant, check_conversation_id(named, "conversation")
        )
    if data.get("previous_response_id") is None:
        return None
    turn = await previous_turn(state, tenant, data["previous_response_id"])
    return await conversations.get(state.engine, tenant, str(turn.conversation_id))


async def _compact_stored(
    state: AppState, conv: Conversation, data: dict[str, Any], rid: str
) -> dict[str, Any]:
    if data.get("input") is not None:
        await conversations.append(state.engine, conv, messages_from_input(data["input"]))
    await compact_conversation(state.engine, conv)
    current = await conversations.get(state.engine, conv.tenant_id, conv.id)
    checkpoint = await state.store.latest_checkpoint(current.pk) if current.epoch else None
    after = checkpoint.covers_through_seq if checkpoint else 0
    kept = tail_messages(await state.store.load_messages(current.pk, after), checkpoint)
    summary = checkpoint.summary if checkpoint else None
    made = with_tokens(Message(role="assistant", content=summary or "")).tokens
    usage = {"input_tokens": checkpoint.tokens_before if checkpoint else 0, "output_tokens": made}
    cmp = wire.item(
        item_id=f"cmp_{rid}", conversation=current.id, epoch=current.epoch, summary=None
    )
    return wire.compacted(f"resp_{rid}", [*_user_items(kept, rid), cmp], usage)


async def compact_response(request: Request) -> Response:
    state, tenant = state_of(request), tenant_of(request)
    data = await read_json_object(request, state.settings.max_body_bytes, "input")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model is required", "model", "model_required")
    parsed(CompactRequest, data)  # the types, 400 naming the field
    rid = secrets.token_hex(16)
    conv = await _stored(state, tenant, data)
    if conv is not None:
        return json_response(await _compact_stored(state, conv, data, rid))
    if data.get("input") is None:
        raise _bad("give input, previous_response_id or conversation", "input")
    messages = messages_from_input(data["input"])
    summary, usage = await summarise(state.engine, model, messages)
    cmp = wire.item(item_id=f"cmp_{rid}", conversation=None, epoch=0, summary=summary)
    return json_response(wire.compacted(f"resp_{rid}", [*_user_items(messages, rid), cmp], usage))
