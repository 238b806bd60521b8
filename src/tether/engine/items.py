"""What the Conversations API does to Tether conversations: create one with its first messages,
and remove a message from the model's view. Removing never deletes: the
messages stay in the transcript with their seq, marked removed (when), and the model's view
leaves them out from then on. A tool call and its results go together — the view never holds a
call without its answer, or an answer without its call."""

from __future__ import annotations

import time
from dataclasses import replace

from tether.engine.conversations import not_found
from tether.engine.ids import mint_conversation_id
from tether.engine.messages import title_of, with_tokens
from tether.engine.service import Engine
from tether.engine.validate import validate_sequence
from tether.errors import TetherError
from tether.model import Conversation, Message
from tether.store.base import ImportedConversation
from tether.upstream.wire import chat_message

CHUNK = 64  # messages read on each side of one removed, to find its tool-call group


async def create(
    engine: Engine, tenant_id: str, messages: list[Message], metadata: dict[str, str]
) -> Conversation:
    """A new conversation holding `messages` (checked like a turn's), written whole."""
    validate_sequence([chat_message(m) for m in messages], frozenset())
    now = time.time()
    stored = [replace(with_tokens(m), seq=i + 1, created_at=now) for i, m in enumerate(messages)]
    system = [str(m.content) for m in stored if m.role in ("system", "developer")]
    made = await engine.store.import_conversation(
        tenant_id,
        ImportedConversation(
            id=mint_conversation_id(),
            aliases=[],
            title=title_of(stored),
            model=None,
            system_prompt=system[-1] if system else None,
            metadata=metadata,
            created_at=now,
            updated_at=now,
            messages=stored,
            checkpoints=[],
        ),
    )
    if made is None:  # 128 random bits collided
        raise TetherError(500, "internal_error", "a minted conversation id was taken")
    return made


def _group(messages: list[Message], seq: int) -> list[int]:
    """The seqs that leave the view with message `seq`: a tool call's message and its results."""
    by_seq = {m.seq: m for m in messages}
    m = by_seq[seq]
    if m.role == "tool":
        caller = next(
            (
                c
                for c in sorted(by_seq.values(), key=lambda x: -x.seq)
                if c.seq < seq and any(t.get("id") == m.tool_call_id for t in c.tool_calls or ())
            ),
            None,
        )
        if caller is None:
            return [seq]
        m = caller
    if not m.tool_calls:
        return [m.seq]
    ids = {t.get("id") for t in m.tool_calls}
    answers = [
        x.seq for x in messages if x.seq > m.seq and x.role == "tool" and x.tool_call_id in ids
    ]
    return [m.seq, *answers]


async def remove(engine: Engine, conv: Conversation, seq: int) -> Conversation:
    """Take message `seq` (with its tool-call group) out of the model's view."""
    async with engine.coordinator.hold(conv.tenant_id, conv.id):  # never under a turn
        near = await engine.store.load_messages(
            conv.pk, max(0, seq - CHUNK), min(conv.last_seq, seq + CHUNK)
        )
        if not any(m.seq == seq for m in near):
            raise TetherError(404, "item_not_found", f"no message {seq} in {conv.id!r}")
        await engine.store.remove_messages(conv.pk, _group(near, seq), time.time())
        engine.views.drop((conv.tenant_id, conv.id))
    current = await engine.store.resolve(conv.tenant_id, conv.id)
    if current is None:
        raise not_found(conv.id)
    return current
