"""Tool calls a client never answered (docs/contract.md, "Dangling tool calls").

Some clients leave a tool call unanswered by design (pydantic-ai's structured output takes the
call's arguments as the result and goes on) or after a crash. A user message after such calls
would make the sequence invalid for every later request, wedging the conversation. Instead each
unanswered call is closed by a tool result saying no result was returned, stored (marked with
`tether_synthetic`, visible in the transcript) and named in the turn's notes. With
`TETHER_DANGLING_TOOL_CALLS=reject` the request gets the 422 instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.engine.fingerprint import INSTRUCTION_ROLES, SYNTHETIC
from tether.model import Message

NO_RESULT = (
    "No result was returned for this tool call: the conversation went on without it "
    "(closed by Tether)."
)


def pending_calls(history: Sequence[Message]) -> list[str]:
    """The last assistant message's tool calls that no later tool result answers, in order."""
    answered: set[str | None] = set()
    for m in reversed(history):
        if m.role == "tool":
            answered.add(m.tool_call_id)
        elif m.role not in INSTRUCTION_ROLES:
            calls = (m.tool_calls or []) if m.role == "assistant" else []
            return [str(c.get("id")) for c in calls if str(c.get("id")) not in answered]
    return []


def closing(call_id: str) -> Message:
    return Message("tool", NO_RESULT, tool_call_id=call_id, extra={SYNTHETIC: "dangling_tool_call"})


def close_dangling(
    history: Sequence[Message], new: Sequence[Message]
) -> tuple[list[Message], list[str]]:
    """`new` with a closing tool result before each user message that follows unanswered calls
    (of the stored history's end or of `new` itself), and the ids it closed."""
    pending = pending_calls(history)
    out: list[Message] = []
    closed: list[str] = []
    for m in new:
        if m.role == "tool":
            pending = [c for c in pending if c != m.tool_call_id]
        elif m.role == "user" and pending:
            out.extend(closing(c) for c in pending)
            closed.extend(pending)
            pending = []
        elif m.role == "assistant" and not pending:
            # (calls still pending at an assistant message: the validator reports the error)
            pending = [str(c.get("id")) for c in m.tool_calls or []]
        out.append(m)
    return out, closed
