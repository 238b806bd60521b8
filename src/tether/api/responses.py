"""`POST /v1/responses` and `GET /v1/responses/{id}`: the Responses API over the same turns and
conversations as Chat Completions. A response id names the turn that made it (`resp_…` ↔
`turn_…`), so it names a point in a conversation: continuing from the conversation's head with
`previous_response_id` continues the conversation; from an older response, a fork made at that
point (never a rewrite). `conversation` continues a conversation directly."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tether.api.access import state_of, tenant_of
from tether.api.body import read_json_object
from tether.api.jsonbody import json_response
from tether.api.models_manage import CreateResponse, parsed
from tether.api.sse import replay_stream, turn_stream
from tether.api.state import AppState
from tether.engine import conversations, idempotency
from tether.engine.ids import check_conversation_id
from tether.engine.incoming import Incoming
from tether.engine.request import TurnInfo, TurnRequest
from tether.engine.turn import TurnRun
from tether.errors import TetherError
from tether.model import Message, Turn
from tether.protocols import responses_compact as compaction
from tether.protocols import responses_items as items
from tether.protocols.responses import Responses, response_id, response_object, turn_of, usage_of
from tether.upstream.wire import chat_message

# store: false writes nothing: no compaction (a checkpoint is a write), no server tools (their
# journal is), no idempotency record
UNSTORED: dict[str, Any] = {"store": False, "compaction": "off", "tools": frozenset()}
DELETED = "response_deleted"  # a turn's note: its response was deleted (when)
REQUEST = "response_request"  # a turn's note: what its response repeats of its request
ECHOED = (
    "instructions",
    "tools",
    "tool_choice",
    "truncation",
    "parallel_tool_calls",
    "text",
    "top_p",
    "temperature",
    "presence_penalty",
    "frequency_penalty",
    "top_logprobs",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
    "previous_response_id",
)
PASSED = ("temperature", "top_p", "parallel_tool_calls", "presence_penalty", "frequency_penalty")


def _not_found(rid: str) -> TetherError:
    return TetherError(
        404,
        "previous_response_not_found",
        f"previous response {rid!r} does not exist",
        param="previous_response_id",
    )


async def previous_turn(state: AppState, tenant: str, rid: str) -> Turn:
    if not isinstance(rid, str) or not rid.startswith("resp_"):
        raise _not_found(str(rid)[:80])
    turn = await state.store.find_turn(tenant, turn_of(rid))
    if turn is None or turn.last_seq is None or DELETED in (turn.notes or {}):
        raise _not_found(rid)
    return turn


async def _conversation(
    state: AppState, tenant: str, data: dict[str, Any], store: bool
) -> str | None:
    """Where the response runs: `conversation`, or where `previous_response_id` left off (at
    the head: that conversation; earlier: a fork made at that point — not for `store: false`,
    which writes nothing)."""
    named = data.get("conversation")
    if isinstance(named, dict):
        named = named.get("id")
    previous = data.get("previous_response_id")
    if named is not None and previous is not None:
        raise TetherError(
            400,
            "invalid_request",
            "give conversation or previous_response_id, not both",
            param="conversation",
        )
    if named is not None:
        if not isinstance(named, str):
            raise TetherError(400, "invalid_request", "conversation is an id", param="conversation")
        return check_conversation_id(named, "conversation")
    if previous is None:
        return None
    if isinstance(previous, str) and previous.startswith("resp_"):
        point = state.response_points.get((tenant, turn_of(previous)))
        cached = state.engine.deps.cached(tenant, point[0]) if point is not None else None
        if point is not None and cached is not None and cached.conv.last_seq == point[1]:
            return point[0]  # at the head, as the view in memory says: no read
    turn = await previous_turn(state, tenant, previous)
    assert turn.conversation_id is not None and turn.last_seq is not None
    view = state.engine.deps.cached(tenant, turn.conversation_id)
    if view is not None and view.conv.last_seq == turn.last_seq:
        return view.conv.id  # at the head, as the view in memory says
    conv = await conversations.get(state.engine, tenant, turn.conversation_id)
    if turn.last_seq == conv.last_seq:
        return conv.id
    if not store:
        raise TetherError(
            400,
            "invalid_request",
            f"{previous!r} is not its conversation's latest response: continuing from it makes "
            "a fork, a stored conversation, and store: false stores nothing",
            param="previous_response_id",
        )
    fork = await conversations.fork(state.engine, conv, turn.last_seq)
    return fork.id


def _params(data: dict[str, Any]) -> dict[str, Any]:
    """The Chat Completions parameters the upstream gets."""
    params = {k: data[k] for k in PASSED if data.get(k) is not None}
    if (tools := items.chat_tools(data.get("tools"))) is not None:
        params["tools"] = tools
    if (choice := items.chat_tool_choice(data.get("tool_choice"))) is not None:
        params["tool_choice"] = choice
    if (fmt := items.chat_response_format(data.get("text"))) is not None:
        params["response_format"] = fmt
    if isinstance(data.get("max_output_tokens"), int):
        params["max_tokens"] = data["max_output_tokens"]
    return params


def _messages(data: dict[str, Any]) -> Incoming:
    new = items.messages_from_input(data.get("input"))
    instructions = data.get("instructions")
    if isinstance(instructions, str) and instructions:
        new.insert(0, Message(role="system", content=instructions))
    return Incoming([chat_message(m) for m in new], lambda _, i: new[i])


@dataclass(frozen=True, slots=True, kw_only=True)
class Begun:
    """A response under way: its turn (its stream `run.out`), or a keyed request's replay."""

    run: TurnRun | None = None
    info: TurnInfo | None = None
    projection: Responses | None = None
    replay: tuple[list[bytes], dict[str, str]] | None = None


async def begin(
    state: AppState, tenant: str, data: dict[str, Any], idempotency_key: str | None, path: str
) -> Begun:
    """Start the response `data` asks for (the body of `POST /v1/responses`, or a WebSocket's
    `response.create`): checked, placed in its conversation, its turn running."""
    parsed(CreateResponse, data)  # the types (400 naming the field); `data` is used as sent
    data = compaction.continued(data)  # a compaction item in the input: where it continues
    store = data.get("store") is not False
    stream = data.get("stream") is True
    messages = _messages(data)
    model = data.get("model") if isinstance(data.get("model"), str) else None
    key = None  # store: false keeps no record of its answer to replay
    if store and idempotency_key is not None:
        key = idempotency.key_for(tenant, path, idempotency_key, [data])
    conversation_id = await _conversation(state, tenant, data, store)
    projection = Responses(
        stream=stream,
        request=data,
        previous=data.get("previous_response_id"),
        nowhere=not store and conversation_id is None,
        finished=None if not store else _remember(state, tenant),
    )
    req = TurnRequest(
        tenant_id=tenant,
        conversation_id=conversation_id,
        messages=messages,
        model=model,
        stream=stream,
        params=_params(data),
        projection=projection,
        history="append",  # a Responses client sends only what is new
        idempotency=key,
        notes={REQUEST: {k: data[k] for k in ECHOED if data.get(k) is not None}},
        **({} if store else UNSTORED),
    )
    if key is not None:
        record = await idempotency.claim(state.store, key, state.settings.idempotency_retention)
        if record is not None:
            return Begun(replay=idempotency.replayed(record))
    try:
        run, info = await state.engine.start(req)
    except TetherError:
        await idempotency.release(state.store, key)
        raise
    return Begun(run=run, info=info, projection=projection)


def _remember(state: AppState, tenant: str) -> Callable[[TurnInfo], None]:
    def finished(info: TurnInfo) -> None:
        state.response_points.put((tenant, info.turn_id), (info.conversation_id, info.version))

    return finished


async def create_response(request: Request) -> Response:
    state = state_of(request)
    data = await read_json_object(request, state.settings.max_body_bytes, "input")
    begun = await begin(
        state, tenant_of(request), data, request.headers.get("idempotency-key"), request.url.path
    )
    if begun.replay is not None:
        payloads, headers = begun.replay
        if data.get("stream") is True:
            return replay_stream(payloads, headers)
        return Response(payloads[0], 200, headers, media_type="application/json")
    assert begun.run is not None and begun.info is not None and begun.projection is not None
    run = begun.run
    if data.get("stream") is not True:
        return Response(await run.result, 200, run.final_headers, media_type="application/json")
    return turn_stream(state, run.out, 0, begun.projection.headers(begun.info))


async def _stored(state: AppState, tenant: str, rid: str) -> tuple[Turn, dict[str, Any]]:
    """A response rebuilt from its turn: the reply it stored (none yet while it runs, none
    if it was cancelled or failed), its usage, its status."""
    turn = None
    if isinstance(rid, str) and rid.startswith("resp_"):
        turn = await state.store.find_turn(tenant, turn_of(rid))
    if turn is None or turn.conversation_id is None or DELETED in (turn.notes or {}):
        raise TetherError(404, "response_not_found", f"response {rid[:80]!r} does not exist")
    conv = await conversations.get(state.engine, tenant, turn.conversation_id)
    stored: list[Message] = []
    if turn.last_seq is not None:
        stored = await state.store.load_messages(conv.pk, turn.last_seq - 1, turn.last_seq)
    asked = (turn.notes or {}).get(REQUEST) or {}
    body = response_object(
        rid=response_id(turn.id),
        created_at=turn.started_at,
        model=turn.model or "",
        status="in_progress" if turn.status == "running" else turn.status,
        output=items.output_items(stored, turn.id),
        request=asked,
        previous=asked.get("previous_response_id"),
        usage=usage_of(turn.usage),
        completed_at=turn.finished_at,
        error={"code": str(turn.error.get("code")), "message": str(turn.error.get("message"))}
        if turn.error
        else None,
    )
    body["conversation"] = {"id": conv.id}
    return turn, body


async def get_response(request: Request) -> Response:
    """The response as JSON; with `stream=true` its events again, after `starting_after` (a
    sequence number) or `Last-Event-ID`, then live ones while it runs."""
    state, tenant = state_of(request), tenant_of(request)
    rid = request.path_params["response_id"]
    _not_compact(rid)
    if request.query_params.get("stream") != "true":
        _, body = await _stored(state, tenant, rid)
        return json_response(body)
    after = _resume_point(request)
    running = state.engine.coordinator.find(turn_of(rid)) if rid.startswith("resp_") else None
    if running is None or running.tenant_id != tenant or not running.stream:
        await _stored(state, tenant, rid)  # 404 for no such response
        raise TetherError(
            410,
            "events_expired",
            f"the events of response {rid} are no longer buffered (or it was not streamed); "
            "GET it without stream for its result",
        )
    headers = {"X-Tether-Turn": running.turn_id}
    if running.conversation_id:
        headers["X-Tether-Conversation"] = running.conversation_id
    return turn_stream(state, running, after, headers)


def _resume_point(request: Request) -> int:
    """How many of the stream's events the client has: event `sequence_number` s is the
    stream's event s + 1 (its SSE id)."""
    given = request.query_params.get("starting_after")
    header = request.headers.get("last-event-id")
    if given is not None:
        if not given.isdigit() or len(given) > 9:
            raise TetherError(
                400,
                "invalid_request",
                "starting_after is a sequence number",
                param="starting_after",
            )
        return int(given) + 1
    if header is not None and header.strip():
        if not header.strip().isdigit() or len(header.strip()) > 9:
            raise TetherError(
                400, "invalid_request", "Last-Event-ID is an event id", param="last-event-id"
            )
        return int(header.strip())
    return 0


def _not_compact(rid: str) -> None:
    """/v1/responses/compact is a path of its own (POST): another method is a 405 there."""
    if rid == "compact":
        raise TetherError(
            405,
            "method_not_allowed",
            "use POST for /v1/responses/compact",
            headers={"Allow": "POST"},
        )


async def delete_response(request: Request) -> Response:
    """Delete the response: from now on it is unknown (GET, input_items, previous_response_id:
    404). Its conversation keeps its messages — they are the conversation's, and a transcript
    is never rewritten; delete the conversation to remove them. A running one is stopped."""
    state, tenant = state_of(request), tenant_of(request)
    rid = request.path_params["response_id"]
    _not_compact(rid)
    turn, _ = await _stored(state, tenant, rid)
    running = state.engine.coordinator.find(turn.id)
    if running is not None and running.tenant_id == tenant:
        running.stop()
        await running.ended()
    await state.store.note_turn(tenant, turn.id, DELETED, time.time())
    state.response_points.drop((tenant, turn.id))
    return json_response({"id": rid, "object": "response", "deleted": True})


async def cancel_response(request: Request) -> Response:
    """Stop a running response (nothing of its turn is stored); a finished one is left as it
    ended. Either way the answer is the response as it is then."""
    state, tenant = state_of(request), tenant_of(request)
    rid = request.path_params["response_id"]
    running = state.engine.coordinator.find(turn_of(rid)) if rid.startswith("resp_") else None
    if running is not None and running.tenant_id == tenant:
        running.stop()
        await running.ended()
    _, body = await _stored(state, tenant, rid)
    return json_response(body)


async def list_input_items(request: Request) -> Response:
    """The items the response's turn stored besides its final reply (the input it was given,
    and any server tool rounds), oldest first (`order=desc`: newest first), `limit` (1-100,
    default 20) a page, `after` an item id."""
    state, tenant = state_of(request), tenant_of(request)
    turn, _ = await _stored(state, tenant, request.path_params["response_id"])
    conv = await conversations.get(state.engine, tenant, str(turn.conversation_id))
    found: list[dict[str, Any]] = []
    if turn.first_seq is not None and turn.last_seq is not None:
        stored = await state.store.load_messages(conv.pk, turn.first_seq - 1, turn.last_seq - 1)
        found = items.input_items(stored, turn.id)
    if request.query_params.get("order", "desc") == "desc":
        found.reverse()
    after = request.query_params.get("after")
    if after is not None:
        at = next((i for i, item in enumerate(found) if item["id"] == after), None)
        found = found[at + 1 :] if at is not None else []
    limit = request.query_params.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise TetherError(400, "invalid_request", "limit must be 1 to 100", param="limit")
    page = found[: int(limit)]
    body = {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(found) > len(page),
    }
    return json_response(body)
