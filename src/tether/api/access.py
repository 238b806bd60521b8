"""What every route needs first: the app's state, the caller's tenant, a conversation the
caller owns."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from tether.api.state import AppState
from tether.engine.ids import check_conversation_id
from tether.errors import TetherError
from tether.model import Conversation

TENANT_KEY = "tether.tenant"  # in the ASGI scope: the request's tenant (api/gate.py)


def state_of(request: Request) -> AppState:
    return cast(AppState, request.app.state.tether)


def tenant_of(request: Request) -> str:
    """The caller's tenant, authenticated (and rate-counted) by api/gate.py before routing.
    A KeyError here is a route reached without the gate: a bug, answered 500."""
    return cast(str, request.scope[TENANT_KEY])


async def owned(request: Request) -> tuple[AppState, Conversation]:
    state = state_of(request)
    tenant = tenant_of(request)
    cid = check_conversation_id(request.path_params["conversation_id"], "conversation_id")
    conv = await state.store.resolve(tenant, cid)
    if conv is None:
        raise TetherError(404, "conversation_not_found", f"conversation {cid!r} does not exist")
    return state, conv
