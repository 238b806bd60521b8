"""Tool calls waiting for approval: GET /v1/conversations/{id}/approvals lists them, POST
…/turns/{turn_id}/approvals/{call_id} settles one (`{"decision": "approve" | "deny"}`)."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request
from starlette.responses import Response

from tether.api.access import state_of, tenant_of
from tether.api.body import read_json_object
from tether.api.jsonbody import json_response
from tether.api.shapes import ApprovalBody, ApprovalDecision, ApprovalList
from tether.engine.approvals import Decision
from tether.engine.ids import check_conversation_id
from tether.errors import TetherError


async def _ids(request: Request) -> tuple[str, list[str]]:
    """The tenant, and the ids the path's conversation goes by (as named, and its own). A
    conversation that is not stored exists here only while its first turn waits for approval:
    else 404, as for any conversation of another tenant."""
    state, tenant = state_of(request), tenant_of(request)
    cid = check_conversation_id(request.path_params["conversation_id"], "conversation_id")
    conv = await state.store.resolve(tenant, cid)
    if conv is None and not state.engine.deps.approvals.waiting(tenant, cid):
        raise TetherError(404, "conversation_not_found", f"conversation {cid!r} does not exist")
    return tenant, [cid] if conv is None or conv.id == cid else [cid, conv.id]


async def list_approvals(request: Request) -> Response:
    tenant, ids = await _ids(request)
    approvals = state_of(request).engine.deps.approvals
    seen: dict[tuple[str, str], ApprovalBody] = {}
    for cid in ids:
        for p in approvals.waiting(tenant, cid):
            seen[(p.turn_id, p.call_id)] = {
                "turn_id": p.turn_id,
                "call_id": p.call_id,
                "tool": p.tool,
                "arguments": p.arguments,
                "since": p.since,
            }
    body: ApprovalList = {"object": "list", "data": sorted(seen.values(), key=_since)}
    return json_response(body, 200)


def _since(a: ApprovalBody) -> float:
    return a["since"]


async def decide(request: Request) -> Response:
    tenant, ids = await _ids(request)
    data = await read_json_object(request, 4096, "decision")
    decision = data.get("decision")
    if decision not in ("approve", "deny"):
        raise TetherError(
            400, "invalid_request", "`decision` must be 'approve' or 'deny'", param="decision"
        )
    turn_id, call_id = request.path_params["turn_id"], request.path_params["call_id"]
    approvals = state_of(request).engine.deps.approvals
    chosen = cast(Decision, decision)
    if not any(approvals.decide(tenant, cid, turn_id, call_id, chosen) for cid in ids):
        state = state_of(request)
        known = await state.store.get_turn(tenant, ids[0], turn_id) is not None
        if not known and state.engine.find(tenant, ids[0], turn_id) is None:
            raise TetherError(404, "turn_not_found", "no such turn in this conversation")
        raise TetherError(
            404,
            "approval_not_found",
            f"no call {call_id!r} of turn {turn_id!r} waits for approval in this conversation "
            "(decided already, timed out, or never asked)",
        )
    body: ApprovalDecision = {"turn_id": turn_id, "call_id": call_id, "decision": chosen}
    return json_response(body, 200)
