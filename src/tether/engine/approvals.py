"""Tool calls waiting for a person: a call to a tool that needs approval pauses its turn
(`awaiting_approval`) until someone holding the tenant's key approves or denies it, or
TETHER_APPROVAL_TIMEOUT passes (a denial). Nothing waits in a transaction or holds a lock but the
conversation's own turn lock, which the paused turn keeps."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["approve", "deny"]


@dataclass(slots=True, kw_only=True)
class Pending:
    tenant_id: str
    conversation_ids: frozenset[str]  # the id the request named and the conversation's own
    turn_id: str
    call_id: str
    tool: str
    arguments: str  # redacted
    since: float
    decided: asyncio.Future[Decision] = field(repr=False)


class Approvals:
    """The calls waiting on this server, by (turn id, call id)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], Pending] = {}

    async def wait(
        self,
        *,
        tenant_id: str,
        conversation_ids: frozenset[str],
        turn_id: str,
        call_id: str,
        tool: str,
        arguments: str,
        timeout: float,
    ) -> Decision | None:
        """The decision on this call; None if none came within `timeout` seconds."""
        pending = Pending(
            tenant_id=tenant_id,
            conversation_ids=conversation_ids,
            turn_id=turn_id,
            call_id=call_id,
            tool=tool,
            arguments=arguments,
            since=time.time(),
            decided=asyncio.get_running_loop().create_future(),
        )
        self._waiting[(turn_id, call_id)] = pending
        try:
            return await asyncio.wait_for(asyncio.shield(pending.decided), timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop((turn_id, call_id), None)

    def waiting(self, tenant_id: str, conversation_id: str) -> list[Pending]:
        return sorted(
            (
                p
                for p in self._waiting.values()
                if p.tenant_id == tenant_id and conversation_id in p.conversation_ids
            ),
            key=lambda p: p.since,
        )

    def decide(
        self, tenant_id: str, conversation_id: str, turn_id: str, call_id: str, decision: Decision
    ) -> bool:
        """Settle a waiting call; False if no such call waits (for this tenant and conversation)."""
        pending = self._waiting.get((turn_id, call_id))
        if (
            pending is None
            or pending.tenant_id != tenant_id
            or conversation_id not in pending.conversation_ids
            or pending.decided.done()
        ):
            return False
        pending.decided.set_result(decision)
        return True
