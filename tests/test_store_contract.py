"""The contract every `Store` implementation must pass.

Each test runs once per store factory in `STORE_FACTORIES`: SQLite and the in-memory store. A
new backend (PostgreSQL) joins by appending one `pytest.param(factory, id="postgres")`: the
factory is an async context manager that, given the test's tmp_path and an owner (the server's
instance id), yields an unopened store on that test's database (one database per tmp_path, empty
at first, shared by the stores of one test) and cleans up after it. The `store` fixture opens,
migrates and closes it; `other_server` is a second server's store on the same database.

Tests talk to the store only through the `Store` protocol; every method of it is called here
(test_every_store_method_is_tested holds it so). SQLite-only tests live in
tests/test_sqlite_store.py.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
import uuid
from dataclasses import replace
from typing import Any

import pytest

from tether.model import Checkpoint, Conversation, Message, ToolStep, Turn
from tether.store.base import (
    IdempotencyKey,
    IdempotencyRecord,
    Loaded,
    NewConversation,
    Store,
    StoredResponse,
    TurnCommit,
)
from tether.store.errors import ConflictError
from tether.upstream.wire import chat_message

pytestmark = pytest.mark.asyncio(loop_scope="session")

TABLES = {
    "tenants",
    "api_keys",
    "conversations",
    "conversation_aliases",
    "turns",
    "messages",
    "checkpoints",
    "idempotency_keys",
    "tool_steps",
}

# -- helpers ------------------------------------------------------------------------------


def new_turn(
    *,
    model: str | None = "model-a",
    usage: dict[str, Any] | None = None,
    status: str = "completed",
    error: dict[str, Any] | None = None,
) -> Turn:
    return Turn(
        id=f"turn-{uuid.uuid4().hex}",
        status=status,
        model=model,
        stream=False,
        started_at=1_700_000_000.25,
        finished_at=1_700_000_001.5,
        usage=usage,
        error=error,
    )


def chat(n: int, prefix: str = "m") -> list[Message]:
    """n plain messages alternating user/assistant, with distinct content and token counts."""
    return [
        Message(role="user" if i % 2 == 0 else "assistant", content=f"{prefix}{i}", tokens=i + 1)
        for i in range(n)
    ]


def as_stored(m: Message) -> Message:
    """What a caller passed in, i.e. a loaded message without the store-assigned fields."""
    return replace(m, seq=0, turn_id=None, created_at=0.0)


def payload(m: Message) -> tuple[Any, ...]:
    return (m.role, m.content, m.tool_calls, m.tool_call_id, m.name, m.extra, m.tokens, m.seq)


async def create(
    store: Store,
    tenant: str,
    conv_id: str,
    messages: list[Message],
    *,
    system_prompt: str | None = None,
    title: str | None = None,
    model: str | None = "model-a",
    turn: Turn | None = None,
) -> Conversation:
    return await store.commit_turn(
        TurnCommit(
            tenant_id=tenant,
            turn=turn or new_turn(model=model),
            messages=messages,
            new_conversation=NewConversation(id=conv_id, title=title, model=model),
            system_prompt=system_prompt,
        )
    )


async def append(
    store: Store,
    conv: Conversation,
    messages: list[Message],
    *,
    turn: Turn | None = None,
    expected_last_seq: int | None = None,
    **kw: Any,
) -> Conversation:
    return await store.commit_turn(
        TurnCommit(
            tenant_id=conv.tenant_id,
            turn=turn or new_turn(),
            messages=messages,
            conversation_pk=conv.pk,
            expected_last_seq=conv.last_seq if expected_last_seq is None else expected_last_seq,
            system_prompt=kw.pop("system_prompt", conv.system_prompt),
            **kw,
        )
    )


def checkpoint(epoch: int, covers: int, prune: int | None = None, **kw: Any) -> Checkpoint:
    fields: dict[str, Any] = {
        "epoch": epoch,
        "covers_through_seq": covers,
        "prune_through_seq": covers if prune is None else prune,
        "summary": f"summary through {covers}",
        "ledger": [f"fact {epoch}.1", f"fact {epoch}.2"],
        "tokens_before": 1000 * epoch,
        "tokens_after": 100 * epoch,
        "model": "summariser",
        "prompt_version": "v1",
        "stats": {"epoch": epoch, "dropped": covers, "nested": {"ratio": 0.5, "ids": [1, 2]}},
        "turn_id": None,
        "created_at": 0.0,
    }
    fields.update(kw)
    return Checkpoint(**fields)


async def seqs(store: Store, pk: int) -> list[int]:
    return [m.seq for m in await store.load_messages(pk)]


# -- migrations ---------------------------------------------------------------------------


async def test_migrate_is_idempotent_and_creates_every_table(unmigrated_store: Store) -> None:
    applied = await unmigrated_store.migrate()
    assert applied, "a fresh database must get at least one migration"
    assert all(isinstance(v, int) for v in applied)
    assert applied == sorted(set(applied))

    assert await unmigrated_store.migrate() == []
    assert await unmigrated_store.migrate() == []

    assert await unmigrated_store.counts() == dict.fromkeys(TABLES, 0)


# -- tenants and keys ---------------------------------------------------------------------


async def test_add_api_key_creates_tenant_and_maps_hash(store: Store) -> None:
    assert await store.count_api_keys() == 0
    assert await store.tenant_for_key("hash-1") is None

    await store.add_api_key("tenant-a", "hash-1", "sk-aaaa")
    counts = await store.counts()
    assert counts["tenants"] == 1
    assert counts["api_keys"] == 1
    assert await store.tenant_for_key("hash-1") == "tenant-a"
    assert await store.tenant_for_key("hash-unknown") is None
    assert await store.tenant_for_key("") is None

    await store.add_api_key("tenant-a", "hash-2", "sk-bbbb")
    await store.add_api_key("tenant-b", "hash-3", "sk-cccc")
    assert await store.count_api_keys() == 3
    assert (await store.counts())["tenants"] == 2
    assert await store.tenant_for_key("hash-2") == "tenant-a"
    assert await store.tenant_for_key("hash-3") == "tenant-b"


async def test_ensure_tenant_is_idempotent(store: Store) -> None:
    await store.ensure_tenant("tenant-a")
    await store.ensure_tenant("tenant-a")
    assert (await store.counts())["tenants"] == 1
    await store.add_api_key("tenant-a", "hash-1", "sk-aaaa")
    await store.ensure_tenant("tenant-b")
    counts = await store.counts()
    assert counts["tenants"] == 2
    assert counts["api_keys"] == 1
    assert await store.tenant_for_key("hash-1") == "tenant-a"


# -- commit_turn: a new conversation ------------------------------------------------------


async def test_new_conversation_commit_stores_everything(store: Store) -> None:
    messages = [
        Message(role="user", content="What is the weather in Zürich? ☂", tokens=11),
        Message(
            role="assistant",
            content=None,
            tool_calls=[
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Zürich"}'},
                }
            ],
            tokens=20,
        ),
        Message(
            role="tool",
            content='{"temp_c": 7.5}',
            tool_call_id="call_1",
            name="weather",
            tokens=6,
        ),
        Message(
            role="user",
            content=[
                {"type": "text", "text": "and this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
            tokens=90,
        ),
        Message(
            role="assistant",
            content="",
            extra={"refusal": None, "audio": {"id": "a1"}, "scores": [0.25, 1, True]},
            tokens=1,
        ),
        Message(role="assistant", content="Cold and rainy.", name="bot", tokens=0),
    ]
    turn = new_turn(model="model-a", usage={"prompt_tokens": 50, "completion_tokens": 5})
    assert await store.resolve("tenant-a", "conv-1") is None

    conv = await create(
        store,
        "tenant-a",
        "conv-1",
        messages,
        system_prompt="You are terse.",
        title="Weather",
        model="model-a",
        turn=turn,
    )

    assert conv.id == "conv-1"
    assert conv.tenant_id == "tenant-a"
    assert conv.title == "Weather"
    assert conv.model == "model-a"
    assert conv.system_prompt == "You are terse."
    assert conv.last_seq == len(messages)
    assert conv.turn_count == 1
    assert conv.epoch == 0
    assert conv.forked_from_id is None
    assert conv.forked_from_seq is None
    assert conv.created_at > 0
    assert conv.updated_at >= conv.created_at
    assert await store.resolve("tenant-a", "conv-1") == conv

    counts = await store.counts()
    assert counts["tenants"] == 1, "commit_turn with a new conversation creates the tenant"
    assert counts["conversations"] == 1
    assert counts["turns"] == 1
    assert counts["messages"] == len(messages)

    loaded = await store.load_messages(conv.pk)
    assert [m.seq for m in loaded] == list(range(1, len(messages) + 1))
    assert [as_stored(m) for m in loaded] == messages
    assert all(m.turn_id == turn.id for m in loaded)
    assert all(m.created_at > 0 for m in loaded)
    assert [chat_message(m) for m in loaded] == [chat_message(m) for m in messages]
    # "" and None are different contents and must stay different
    assert loaded[4].content == ""
    assert loaded[1].content is None

    row = await store.get_turn("tenant-a", "conv-1", turn.id)
    assert row == Turn(
        id=turn.id,
        conversation_id="conv-1",
        status="completed",
        model="model-a",
        usage={"prompt_tokens": 50, "completion_tokens": 5},
        error=None,
        started_at=turn.started_at,
        finished_at=turn.finished_at,
        first_seq=1,
        last_seq=len(messages),
    )


async def test_new_conversation_without_title_model_or_system(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2), model=None)
    assert conv.title is None
    assert conv.model is None
    assert conv.system_prompt is None
    assert conv.last_seq == 2
    assert await store.resolve("tenant-a", "conv-1") == conv


async def test_load_messages_after_and_through(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(5))

    async def window(after: int = 0, through: int | None = None) -> list[int]:
        return [m.seq for m in await store.load_messages(conv.pk, after, through)]

    assert await window() == [1, 2, 3, 4, 5]
    assert await window(after=2) == [3, 4, 5]
    assert await window(through=3) == [1, 2, 3]
    assert await window(after=1, through=4) == [2, 3, 4]
    assert await window(after=2, through=3) == [3]
    assert await window(after=5) == []
    assert await window(through=0) == []
    assert await window(after=3, through=3) == []
    assert await window(through=99) == [1, 2, 3, 4, 5]
    loaded = await store.load_messages(conv.pk, after_seq=3)
    assert [m.content for m in loaded] == ["m3", "m4"]
    assert await store.load_messages(conv.pk + 1000) == []


# -- commit_turn: an existing conversation ------------------------------------------------


async def test_append_with_current_last_seq_continues_the_sequence(store: Store) -> None:
    first = new_turn()
    conv = await create(store, "tenant-a", "conv-1", chat(2, "a"), turn=first)
    second = new_turn()
    conv2 = await append(store, conv, chat(3, "b"), turn=second)

    assert conv2.pk == conv.pk
    assert conv2.last_seq == 5
    assert conv2.turn_count == 2
    assert conv2.updated_at >= conv.updated_at
    assert conv2.created_at == conv.created_at
    assert await store.resolve("tenant-a", "conv-1") == conv2

    loaded = await store.load_messages(conv.pk)
    assert [m.seq for m in loaded] == [1, 2, 3, 4, 5]
    assert [m.content for m in loaded] == ["a0", "a1", "b0", "b1", "b2"]
    assert [m.turn_id for m in loaded] == [first.id] * 2 + [second.id] * 3

    conv3 = await append(store, conv2, chat(1, "c"))
    assert conv3.last_seq == 6
    assert conv3.turn_count == 3
    assert await seqs(store, conv.pk) == [1, 2, 3, 4, 5, 6]
    for t in (first, second):
        row = await store.get_turn("tenant-a", "conv-1", t.id)
        assert row is not None
        assert row.status == "completed"


async def test_stale_expected_last_seq_conflicts_and_writes_nothing(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2))
    stale = conv
    conv = await append(store, conv, chat(2, "x"))
    assert conv.last_seq == 4
    before_counts = await store.counts()
    before_messages = await store.load_messages(conv.pk)

    for expected in (stale.last_seq, 0, 3, 5, 100):
        loser = new_turn()
        with pytest.raises(ConflictError):
            await append(store, conv, chat(2, "lost"), turn=loser, expected_last_seq=expected)
        assert await store.get_turn("tenant-a", "conv-1", loser.id) is None

    assert await store.counts() == before_counts
    assert await store.load_messages(conv.pk) == before_messages
    assert await store.resolve("tenant-a", "conv-1") == conv


async def test_duplicate_new_conversation_id_conflicts_and_writes_nothing(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2), system_prompt="one", title="One")
    before_counts = await store.counts()
    before_messages = await store.load_messages(conv.pk)

    dup = new_turn()
    with pytest.raises(ConflictError):
        await create(
            store, "tenant-a", "conv-1", chat(3, "dup"), system_prompt="two", title="Two", turn=dup
        )

    assert await store.counts() == before_counts
    assert await store.load_messages(conv.pk) == before_messages
    assert await store.resolve("tenant-a", "conv-1") == conv
    assert await store.get_turn("tenant-a", "conv-1", dup.id) is None


async def test_same_conversation_id_in_another_tenant_is_separate(store: Store) -> None:
    a = await create(store, "tenant-a", "conv-1", chat(2, "a"), system_prompt="A", title="A")
    b = await create(store, "tenant-b", "conv-1", chat(3, "b"), system_prompt="B", title="B")

    assert b.pk != a.pk
    assert b.tenant_id == "tenant-b"
    assert b.last_seq == 3
    assert await store.resolve("tenant-a", "conv-1") == a
    assert await store.resolve("tenant-b", "conv-1") == b
    assert await store.resolve("tenant-c", "conv-1") is None
    assert [m.content for m in await store.load_messages(a.pk)] == ["a0", "a1"]
    assert [m.content for m in await store.load_messages(b.pk)] == ["b0", "b1", "b2"]

    b2 = await append(store, b, chat(1, "b-more"))
    assert b2.last_seq == 4
    assert await store.resolve("tenant-a", "conv-1") == a
    counts = await store.counts()
    assert counts["tenants"] == 2
    assert counts["conversations"] == 2


# -- usage and system prompt --------------------------------------------------------------


async def test_usage_is_recorded_on_the_conversation(store: Store) -> None:
    usage = {"prompt_tokens": 123, "completion_tokens": 45, "total_tokens": 168}
    turn = new_turn(usage=usage)
    conv = await store.commit_turn(
        TurnCommit(
            tenant_id="tenant-a",
            turn=turn,
            messages=chat(3),
            new_conversation=NewConversation(id="conv-1", title=None, model="model-a"),
            view_epoch=0,
        )
    )
    assert conv.usage_prompt_tokens == 123
    assert conv.usage_through_seq == conv.last_seq - 1 == 2
    assert conv.usage_epoch == 0
    assert await store.resolve("tenant-a", "conv-1") == conv
    row = await store.get_turn("tenant-a", "conv-1", turn.id)
    assert row is not None
    assert row.usage == usage

    conv = await store.commit_checkpoint(conv.pk, checkpoint(1, covers=2))
    conv = await append(
        store, conv, chat(2, "x"), turn=new_turn(usage={"prompt_tokens": 77}), view_epoch=1
    )
    assert conv.usage_prompt_tokens == 77
    assert conv.usage_through_seq == 4
    assert conv.usage_epoch == 1

    # the figure describes the last turn: a turn without usage does not leave a stale one
    conv = await append(store, conv, chat(2, "y"), turn=new_turn(usage=None), view_epoch=1)
    assert conv.usage_prompt_tokens is None
    assert await store.resolve("tenant-a", "conv-1") == conv


async def test_system_changed_controls_the_stored_system_prompt(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2), system_prompt="A")
    assert conv.system_prompt == "A"

    conv = await append(store, conv, chat(2), system_prompt="B", system_changed=False)
    assert conv.system_prompt == "A"
    assert (await store.resolve("tenant-a", "conv-1")).system_prompt == "A"  # type: ignore[union-attr]

    conv = await append(store, conv, chat(2), system_prompt="B", system_changed=True)
    assert conv.system_prompt == "B"
    assert (await store.resolve("tenant-a", "conv-1")).system_prompt == "B"  # type: ignore[union-attr]

    conv = await append(store, conv, chat(2), system_prompt=None, system_changed=True)
    assert conv.system_prompt is None
    assert conv.last_seq == 8


# -- forks --------------------------------------------------------------------------------


async def fork(
    store: Store,
    parent: Conversation,
    fork_id: str,
    through_seq: int,
    messages: list[Message],
    *,
    turn: Turn | None = None,
    inherit: Checkpoint | None = None,
    tenant: str | None = None,
) -> Conversation:
    return await store.commit_turn(
        TurnCommit(
            tenant_id=tenant or parent.tenant_id,
            turn=turn or new_turn(),
            messages=messages,
            new_conversation=NewConversation(
                id=fork_id,
                title="fork",
                model="model-a",
                forked_from_pk=parent.pk,
                forked_from_seq=through_seq,
            ),
            system_prompt=parent.system_prompt,
            view_epoch=1 if inherit is not None else 0,
            inherit_checkpoint=inherit,
        )
    )


async def test_fork_copies_the_parent_prefix_then_appends(store: Store) -> None:
    parent = await create(store, "tenant-a", "parent", chat(2, "p"), system_prompt="S")
    parent = await append(store, parent, chat(2, "q"))
    parent = await append(store, parent, chat(2, "r"))
    parent_messages = await store.load_messages(parent.pk)
    assert parent.last_seq == 6

    turn = new_turn()
    child = await fork(store, parent, "child", 4, chat(2, "f"), turn=turn)

    assert child.pk != parent.pk
    assert child.id == "child"
    assert child.last_seq == 6
    assert child.turn_count == 1
    assert child.epoch == 0
    assert child.system_prompt == "S"
    assert child.forked_from_id == "parent"
    assert child.forked_from_seq == 4
    resolved = await store.resolve("tenant-a", "child")
    assert resolved == child
    assert resolved.forked_from_id == "parent"  # type: ignore[union-attr]
    assert resolved.forked_from_seq == 4  # type: ignore[union-attr]

    loaded = await store.load_messages(child.pk)
    assert [m.seq for m in loaded] == [1, 2, 3, 4, 5, 6]
    assert [payload(m) for m in loaded[:4]] == [payload(m) for m in parent_messages[:4]]
    assert [m.content for m in loaded[4:]] == ["f0", "f1"]
    assert all(m.turn_id == turn.id for m in loaded[4:])
    assert await store.list_checkpoints(child.pk) == []

    # the parent is untouched
    assert await store.resolve("tenant-a", "parent") == parent
    assert await store.load_messages(parent.pk) == parent_messages

    # the fork is a conversation of its own
    child2 = await append(store, child, chat(1, "g"))
    assert child2.last_seq == 7
    assert await seqs(store, child.pk) == [1, 2, 3, 4, 5, 6, 7]
    assert await store.resolve("tenant-a", "parent") == parent


async def test_fork_at_the_parent_end(store: Store) -> None:
    parent = await create(store, "tenant-a", "parent", chat(3, "p"))
    child = await fork(store, parent, "child", parent.last_seq, chat(1, "f"))
    assert child.last_seq == 4
    assert [m.content for m in await store.load_messages(child.pk)] == ["p0", "p1", "p2", "f0"]


async def test_fork_inherits_a_checkpoint_as_epoch_one(store: Store) -> None:
    parent = await create(store, "tenant-a", "parent", chat(6, "p"))
    parent = await store.commit_checkpoint(parent.pk, checkpoint(1, covers=2))
    parent = await store.commit_checkpoint(
        parent.pk, checkpoint(2, covers=4, prune=5, created_at=1_700_000_123.5)
    )
    assert parent.epoch == 2
    parent_checkpoints = await store.list_checkpoints(parent.pk)
    inherited = await store.latest_checkpoint(parent.pk)
    assert inherited is not None
    assert inherited.epoch == 2

    child = await fork(store, parent, "child", 6, chat(2, "f"), inherit=inherited)

    assert child.epoch == 1
    assert (await store.resolve("tenant-a", "child")) == child
    assert await store.list_checkpoints(child.pk) == [replace(inherited, epoch=1)]
    assert await store.latest_checkpoint(child.pk) == replace(inherited, epoch=1)
    assert child.last_seq == 8

    # the parent keeps its own checkpoints and epoch
    assert await store.list_checkpoints(parent.pk) == parent_checkpoints
    assert await store.resolve("tenant-a", "parent") == parent

    # the fork's next checkpoint is epoch 2
    child = await store.commit_checkpoint(child.pk, checkpoint(2, covers=7))
    assert child.epoch == 2
    assert [c.epoch for c in await store.list_checkpoints(child.pk)] == [1, 2]


async def test_fork_beyond_the_parent_end_conflicts(store: Store) -> None:
    parent = await create(store, "tenant-a", "parent", chat(3, "p"))
    before = await store.counts()
    with pytest.raises(ConflictError):
        await fork(store, parent, "child", 10, chat(1, "f"))
    assert await store.counts() == before
    assert await store.resolve("tenant-a", "child") is None


# -- checkpoints --------------------------------------------------------------------------


async def test_commit_checkpoint_round_trips_and_advances_the_epoch(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(4))
    assert await store.latest_checkpoint(conv.pk) is None
    assert await store.list_checkpoints(conv.pk) == []

    turn = new_turn()
    cp1 = checkpoint(1, covers=2, prune=3, turn_id=turn.id)
    after = await store.commit_checkpoint(conv.pk, cp1)
    assert after.epoch == 1
    assert after.last_seq == conv.last_seq
    assert await store.resolve("tenant-a", "conv-1") == after

    got = await store.latest_checkpoint(conv.pk)
    assert got is not None
    assert got.created_at > 0, "a checkpoint given created_at 0.0 is stamped by the store"
    assert got == replace(cp1, created_at=got.created_at)
    assert got.ledger == ["fact 1.1", "fact 1.2"]
    assert got.stats == {"epoch": 1, "dropped": 2, "nested": {"ratio": 0.5, "ids": [1, 2]}}
    assert await store.list_checkpoints(conv.pk) == [got]

    cp2 = checkpoint(
        2, covers=4, summary=None, ledger=[], stats={}, model=None, created_at=1_700_000_999.0
    )
    after = await store.commit_checkpoint(conv.pk, cp2)
    assert after.epoch == 2
    assert await store.latest_checkpoint(conv.pk) == cp2
    assert await store.list_checkpoints(conv.pk) == [got, cp2]
    assert (await store.counts())["checkpoints"] == 2


async def test_commit_checkpoint_conflicts(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(4))
    conv = await store.commit_checkpoint(conv.pk, checkpoint(1, covers=2))
    listed = await store.list_checkpoints(conv.pk)

    bad = [
        checkpoint(1, covers=3),  # the same epoch again
        checkpoint(0, covers=1),  # going back
        checkpoint(3, covers=3),  # skipping an epoch
        checkpoint(2, covers=5),  # covering messages that do not exist
        checkpoint(2, covers=2, prune=5),  # pruning messages that do not exist
    ]
    for cp in bad:
        with pytest.raises(ConflictError):
            await store.commit_checkpoint(conv.pk, cp)

    assert await store.list_checkpoints(conv.pk) == listed
    assert await store.resolve("tenant-a", "conv-1") == conv
    assert conv.epoch == 1
    # still free to take the next epoch
    assert (await store.commit_checkpoint(conv.pk, checkpoint(2, covers=4))).epoch == 2


async def test_messages_stay_loadable_after_a_checkpoint(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(4, "a"))
    everything = await store.load_messages(conv.pk)
    conv = await store.commit_checkpoint(conv.pk, checkpoint(1, covers=3, prune=2))
    assert await store.load_messages(conv.pk) == everything

    conv = await append(store, conv, chat(2, "b"), view_epoch=1)
    loaded = await store.load_messages(conv.pk)
    assert [m.seq for m in loaded] == [1, 2, 3, 4, 5, 6]
    assert loaded[:4] == everything
    assert [m.content for m in loaded[4:]] == ["b0", "b1"]
    tail = await store.load_messages(conv.pk, after_seq=3)
    assert [m.content for m in tail] == ["a3", "b0", "b1"]
    assert conv.epoch == 1


# -- failed turns and get_turn ------------------------------------------------------------


async def test_running_turn_is_replaced_by_its_end_and_abandoned_ones_are_incomplete(
    store: Store,
) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2))
    done = new_turn(status="running")
    left = new_turn(status="running")
    await store.record_turn(conv.pk, done)
    await store.record_turn(conv.pk, left)
    row = await store.get_turn("tenant-a", "conv-1", done.id)
    assert row is not None and row.status == "running" and row.first_seq is None

    done.status, done.finished_at = "completed", done.started_at + 1
    await append(store, conv, chat(2, "n"), turn=done)
    row = await store.get_turn("tenant-a", "conv-1", done.id)
    assert row is not None
    assert (row.status, row.first_seq, row.last_seq) == ("completed", 3, 4)

    error = {"code": "server_restarted", "message": "the server stopped"}
    assert await store.abandon_running_turns(error) == 1
    row = await store.get_turn("tenant-a", "conv-1", left.id)
    assert row is not None
    assert (row.status, row.error) == ("incomplete", error)
    assert row.finished_at is not None
    kept = await store.get_turn("tenant-a", "conv-1", done.id)
    assert kept is not None and kept.status == "completed"
    assert await store.abandon_running_turns(error) == 0


async def test_record_turn(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2))
    before = await store.counts()
    error = {"code": "upstream_error", "message": "boom ✗", "status": 502, "detail": [1, None]}
    failed = new_turn(status="failed", error=error, model="model-b")

    await store.record_turn(conv.pk, failed)

    assert await store.get_turn("tenant-a", "conv-1", failed.id) == Turn(
        id=failed.id,
        conversation_id="conv-1",
        status="failed",
        model="model-b",
        usage=None,
        error=error,
        started_at=failed.started_at,
        finished_at=failed.finished_at,
    )
    after = await store.counts()
    assert after["messages"] == before["messages"]
    assert after["turns"] == before["turns"] + 1
    assert await store.load_messages(conv.pk) == await store.load_messages(conv.pk, 0, 2)
    again = await store.resolve("tenant-a", "conv-1")
    assert again is not None
    assert again.last_seq == conv.last_seq
    assert again.turn_count == conv.turn_count

    # the conversation still takes the next turn at the same expected_last_seq
    assert (await append(store, conv, chat(1))).last_seq == 3


async def test_get_turn_is_scoped_to_tenant_and_conversation(store: Store) -> None:
    turn = new_turn()
    await create(store, "tenant-a", "conv-1", chat(2), turn=turn)
    await create(store, "tenant-a", "conv-2", chat(2))
    await create(store, "tenant-b", "conv-1", chat(2))

    assert (await store.get_turn("tenant-a", "conv-1", turn.id)) is not None
    assert await store.get_turn("tenant-b", "conv-1", turn.id) is None
    assert await store.get_turn("tenant-c", "conv-1", turn.id) is None
    assert await store.get_turn("tenant-a", "conv-2", turn.id) is None
    assert await store.get_turn("tenant-a", "conv-1", "turn-unknown") is None
    assert await store.get_turn("tenant-a", "no-such-conv", turn.id) is None


# -- aliases ------------------------------------------------------------------------------


async def test_alias_resolves_within_its_tenant_only(store: Store) -> None:
    turn = new_turn()
    conv = await create(store, "tenant-a", "conv-1", chat(2), turn=turn)
    await create(store, "tenant-b", "other", chat(1))
    assert await store.resolve("tenant-a", "my-alias") is None

    await store.add_alias("tenant-a", "my-alias", conv.pk)

    assert await store.resolve("tenant-a", "my-alias") == conv
    assert await store.resolve("tenant-b", "my-alias") is None
    assert (await store.counts())["conversation_aliases"] == 1
    row = await store.get_turn("tenant-a", "my-alias", turn.id)
    assert row is not None
    assert row.conversation_id == "conv-1"
    assert await store.get_turn("tenant-b", "my-alias", turn.id) is None

    # an alias follows the conversation as it grows
    conv = await append(store, conv, chat(2))
    assert await store.resolve("tenant-a", "my-alias") == conv


# -- listing ------------------------------------------------------------------------------


async def test_list_conversations_per_tenant_newest_first(store: Store) -> None:
    convs: dict[str, Conversation] = {}
    for conv_id in ("c1", "c2", "c3"):
        convs[conv_id] = await create(store, "tenant-a", conv_id, chat(2))
        await asyncio.sleep(0.005)
    await create(store, "tenant-b", "d1", chat(2))

    listed = await store.list_conversations("tenant-a")
    assert [c.id for c in listed] == ["c3", "c2", "c1"]
    assert listed == [await store.resolve("tenant-a", c.id) for c in listed]
    assert [c.id for c in await store.list_conversations("tenant-a", limit=2)] == ["c3", "c2"]
    assert [c.id for c in await store.list_conversations("tenant-a", limit=1)] == ["c3"]
    assert [c.id for c in await store.list_conversations("tenant-b")] == ["d1"]
    assert await store.list_conversations("tenant-c") == []

    await asyncio.sleep(0.005)
    await append(store, convs["c1"], chat(1))
    assert [c.id for c in await store.list_conversations("tenant-a")] == ["c1", "c3", "c2"]


# -- concurrency --------------------------------------------------------------------------


async def test_concurrent_commits_on_different_new_conversations(store: Store) -> None:
    n = 20
    results = await asyncio.gather(
        *(create(store, "tenant-a", f"conv-{i}", chat(2, f"c{i}-")) for i in range(n))
    )
    assert len({c.pk for c in results}) == n
    for i, conv in enumerate(results):
        assert conv.id == f"conv-{i}"
        assert conv.last_seq == 2
        assert await store.resolve("tenant-a", f"conv-{i}") == conv
        loaded = await store.load_messages(conv.pk)
        assert [(m.seq, m.content) for m in loaded] == [(1, f"c{i}-0"), (2, f"c{i}-1")]
    counts = await store.counts()
    assert counts["conversations"] == n
    assert counts["turns"] == n
    assert counts["messages"] == 2 * n
    assert counts["tenants"] == 1


async def test_concurrent_commits_on_one_conversation_exactly_one_wins(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2))
    read = await store.resolve("tenant-a", "conv-1")
    assert read is not None
    turns = [new_turn() for _ in range(10)]

    results = await asyncio.gather(
        *(
            append(store, read, chat(2, f"t{i}-"), turn=t, expected_last_seq=read.last_seq)
            for i, t in enumerate(turns)
        ),
        return_exceptions=True,
    )

    winners = [(i, r) for i, r in enumerate(results) if isinstance(r, Conversation)]
    losers = [r for r in results if not isinstance(r, Conversation)]
    assert len(winners) == 1, results
    assert len(losers) == 9
    assert all(isinstance(r, ConflictError) for r in losers), losers

    i, won = winners[0]
    assert won.last_seq == 4
    assert won.turn_count == 2
    assert await store.resolve("tenant-a", "conv-1") == won
    loaded = await store.load_messages(conv.pk)
    assert [m.seq for m in loaded] == [1, 2, 3, 4]
    assert [m.content for m in loaded[2:]] == [f"t{i}-0", f"t{i}-1"]
    assert {m.turn_id for m in loaded[2:]} == {turns[i].id}
    for j, t in enumerate(turns):
        row = await store.get_turn("tenant-a", "conv-1", t.id)
        assert (row is not None) == (j == i)
    counts = await store.counts()
    assert counts["turns"] == 2
    assert counts["messages"] == 4


async def test_concurrent_creates_of_one_id_exactly_one_wins(store: Store) -> None:
    results = await asyncio.gather(
        *(create(store, "tenant-a", "conv-1", chat(2, f"c{i}-")) for i in range(5)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Conversation)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if r is not winners[0]), results
    assert await store.resolve("tenant-a", "conv-1") == winners[0]
    assert await seqs(store, winners[0].pk) == [1, 2]
    counts = await store.counts()
    assert counts["conversations"] == 1
    assert counts["turns"] == 1
    assert counts["messages"] == 2


# -- turns: every field round-trips -------------------------------------------------------


async def test_a_turn_record_round_trips_every_field(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2))
    turn = Turn(
        id="turn-streamed",
        status="incomplete",
        model="model-b",
        stream=True,
        started_at=1_700_000_000.5,
        finished_at=1_700_000_002.0,
        first_token_at=1_700_000_000.75,
        usage={"prompt_tokens": 3, "estimated": True},
        error={"code": "upstream_error", "message": "cut"},
        compacted=True,
        notes={"dangling_tool_calls": ["call_1"]},
        conversation_id="ignored: the store names the conversation",
        first_seq=7,  # ignored too: only a commit gives a turn messages
        last_seq=8,
    )
    await store.record_turn(conv.pk, turn)
    assert await store.get_turn("tenant-a", "conv-1", turn.id) == replace(
        turn, conversation_id="conv-1", first_seq=None, last_seq=None
    )
    # what the store returns is its own: changing it changes nothing stored
    got = await store.get_turn("tenant-a", "conv-1", turn.id)
    assert got is not None and got.notes is not None
    got.notes["dangling_tool_calls"].append("call_2")
    again = await store.get_turn("tenant-a", "conv-1", turn.id)
    assert again is not None and again.notes == {"dangling_tool_calls": ["call_1"]}


# -- load_conversation --------------------------------------------------------------------


async def test_load_conversation_reads_row_checkpoint_and_messages_at_once(store: Store) -> None:
    assert await store.load_conversation("tenant-a", "conv-1", full=False) == Loaded(None)
    conv = await create(store, "tenant-a", "conv-1", chat(6), system_prompt="S")
    everything = await store.load_messages(conv.pk)
    for full in (False, True):  # no checkpoint: all messages either way
        assert await store.load_conversation("tenant-a", "conv-1", full) == Loaded(
            conv, None, everything
        )

    conv = await store.commit_checkpoint(conv.pk, checkpoint(1, covers=2))
    conv = await store.commit_checkpoint(conv.pk, checkpoint(2, covers=4, prune=5))
    latest = await store.latest_checkpoint(conv.pk)
    assert latest is not None and latest.epoch == 2
    view = await store.load_conversation("tenant-a", "conv-1", full=False)
    assert view == Loaded(conv, latest, everything[4:])  # after the latest watermark
    assert await store.load_conversation("tenant-a", "conv-1", full=True) == Loaded(
        conv, latest, everything
    )

    await store.add_alias("tenant-a", "the-alias", conv.pk)
    assert await store.load_conversation("tenant-a", "the-alias", full=False) == view
    assert await store.load_conversation("tenant-b", "conv-1", full=True) == Loaded(None)


async def test_load_conversation_of_a_long_conversation(store: Store) -> None:
    """Longer than a read the SQLite store runs on the event loop (INLINE_READ_MESSAGES)."""
    conv = await create(store, "tenant-a", "long", chat(700))
    loaded = await store.load_conversation("tenant-a", "long", full=True)
    assert loaded.conversation == conv
    assert loaded.messages == await store.load_messages(conv.pk)
    assert [m.seq for m in loaded.messages or []] == list(range(1, 701))


# -- find_by_history ----------------------------------------------------------------------


async def test_find_by_history_matches_the_latest_hash_in_the_tenant(store: Store) -> None:
    h1, h2, h3 = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
    a = await store.commit_turn(
        TurnCommit(
            tenant_id="tenant-a",
            turn=new_turn(),
            messages=chat(2),
            new_conversation=NewConversation(id="a", title=None, model=None),
            history_hash=h1,
            history_len=2,
        )
    )
    assert (a.history_hash, a.history_len) == (h1, 2)
    await create(store, "tenant-a", "no-hash", chat(2))
    assert await store.find_by_history("tenant-a", [h1, h3]) == [a]
    assert await store.find_by_history("tenant-b", [h1]) == []
    assert await store.find_by_history("tenant-a", []) == []
    assert await store.find_by_history("tenant-a", [h2]) == []

    a = await append(store, a, chat(2, "x"), history_hash=h2, history_len=4)
    assert await store.find_by_history("tenant-a", [h1]) == []
    assert await store.find_by_history("tenant-a", [h2]) == [a]
    # past SQLite's bound-parameter limit, h2 among them twice
    many = [bytes([i % 256, i // 256]) * 8 for i in range(1200)] + [h2]
    assert await store.find_by_history("tenant-a", many) == [a]


# -- aliases ------------------------------------------------------------------------------


async def test_an_alias_taken_conflicts(store: Store) -> None:
    one = await create(store, "tenant-a", "one", chat(2))
    two = await create(store, "tenant-a", "two", chat(2))
    await store.add_alias("tenant-a", "shared", one.pk)
    with pytest.raises(ConflictError):
        await store.add_alias("tenant-a", "shared", two.pk)
    assert await store.resolve("tenant-a", "shared") == one
    await store.add_alias("tenant-b", "shared", two.pk)  # another tenant's name space
    assert (await store.counts())["conversation_aliases"] == 2


# -- API keys -----------------------------------------------------------------------------


async def test_revoke_api_key_revokes_exactly_one_match(store: Store) -> None:
    await store.add_api_key("tenant-a", "hash-1", "tk_same")
    await asyncio.sleep(0.002)
    await store.add_api_key("tenant-b", "hash-2", "tk_same")
    await store.add_api_key("tenant-a", "hash-3", "tk_other")

    assert await store.revoke_api_key("tk_same") == 2  # ambiguous: nothing revoked
    assert await store.tenant_for_key("hash-1") == "tenant-a"
    assert await store.tenant_for_key("hash-2") == "tenant-b"
    assert await store.revoke_api_key("tk_none") == 0
    assert await store.revoke_api_key("tk_same", "hash-3") == 0  # the hash of another prefix

    assert await store.revoke_api_key("tk_same", "hash-1") == 1
    assert await store.tenant_for_key("hash-1") is None
    assert await store.tenant_for_key("hash-2") == "tenant-b"
    assert await store.revoke_api_key("tk_same", "hash-1") == 0  # already revoked
    assert await store.revoke_api_key("tk_same") == 1  # the one still active
    assert await store.tenant_for_key("hash-2") is None
    assert await store.tenant_for_key("hash-3") == "tenant-a"
    assert await store.count_api_keys() == 3  # revoked keys still count

    keys = await store.list_api_keys()
    assert [(k.prefix, k.tenant_id) for k in keys] == [
        ("tk_same", "tenant-a"),
        ("tk_same", "tenant-b"),
        ("tk_other", "tenant-a"),
    ]
    assert keys[0].created_at <= keys[1].created_at <= keys[2].created_at
    assert [k.revoked_at is not None for k in keys] == [True, True, False]
    assert all(k.revoked_at is None or k.revoked_at >= k.created_at for k in keys)


async def test_list_api_keys_of_an_empty_database(store: Store) -> None:
    assert await store.list_api_keys() == []


async def test_a_key_hash_added_twice_conflicts(store: Store) -> None:
    await store.add_api_key("tenant-a", "hash-1", "tk_aaaa")
    with pytest.raises(ConflictError):
        await store.add_api_key("tenant-b", "hash-1", "tk_bbbb")
    assert await store.tenant_for_key("hash-1") == "tenant-a"
    assert await store.count_api_keys() == 1


async def test_writes_to_a_conversation_that_does_not_exist_conflict(store: Store) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2))
    missing = replace(conv, pk=conv.pk + 1000)
    with pytest.raises(ConflictError):
        await store.commit_checkpoint(missing.pk, checkpoint(1, covers=1))
    with pytest.raises(ConflictError):
        await append(store, missing, chat(2))
    with pytest.raises(ConflictError):
        await store.add_alias("tenant-a", "alias", missing.pk)
    with pytest.raises(ConflictError):
        await fork(store, missing, "child", 0, chat(1))
    assert await store.counts() == {
        **dict.fromkeys(TABLES, 0),
        "tenants": 1,
        "conversations": 1,
        "turns": 1,
        "messages": 2,
    }


# -- idempotency --------------------------------------------------------------------------


def idem(key: str = "k-1", route: str = "chat", tenant: str = "tenant-a") -> IdempotencyKey:
    return IdempotencyKey(tenant_id=tenant, route=route, key=key, request_hash=f"hash-{key}")


async def test_claim_idempotency_claims_then_reports_what_the_key_holds(store: Store) -> None:
    key = idem()
    assert await store.claim_idempotency(key, retention=3600) is None
    assert await store.claim_idempotency(key, retention=3600) == IdempotencyRecord(
        status="running", request_hash="hash-k-1", stream=False, response=None, headers=None
    )
    # a key is scoped to its tenant and route
    assert await store.claim_idempotency(idem(tenant="tenant-b"), 3600) is None
    assert await store.claim_idempotency(idem(route="other"), 3600) is None
    assert (await store.counts())["idempotency_keys"] == 3

    body, headers = b'{"id": "chatcmpl-1", "\xc3\xa9": 1}', {"X-Tether-Turn": "t1"}
    conv = await store.commit_turn(
        TurnCommit(
            tenant_id="tenant-a",
            turn=new_turn(),
            messages=chat(2),
            new_conversation=NewConversation(id="c", title=None, model=None),
            response=StoredResponse(key=key, stream=True, response=body, headers=headers),
        )
    )
    assert conv.last_seq == 2
    done = IdempotencyRecord("completed", "hash-k-1", True, body, headers)
    assert await store.claim_idempotency(key, 3600) == done
    await store.release_idempotency(key)  # a completed result is never released
    assert await store.claim_idempotency(key, 3600) == done


async def test_release_idempotency_lets_a_retry_claim_again(store: Store) -> None:
    key = idem()
    await store.release_idempotency(key)  # nothing held: nothing happens
    assert await store.claim_idempotency(key, 3600) is None
    await store.release_idempotency(idem(tenant="tenant-b"))  # another tenant's: not this one
    assert (await store.claim_idempotency(key, 3600)) is not None
    await store.release_idempotency(key)
    assert (await store.counts())["idempotency_keys"] == 0
    assert await store.claim_idempotency(key, 3600) is None


async def test_idempotency_records_older_than_the_retention_are_forgotten(store: Store) -> None:
    old, kept = idem("old"), idem("kept")
    assert await store.claim_idempotency(old, 3600) is None
    await asyncio.sleep(0.05)
    assert await store.claim_idempotency(kept, 3600) is None
    # a claim past its retention is forgotten when the key is claimed again
    assert await store.claim_idempotency(old, retention=0.02) is None
    assert await store.claim_idempotency(old, 3600) is not None

    await asyncio.sleep(0.05)
    assert await store.reap_idempotency(retention=3600) == 0
    assert await store.reap_idempotency(retention=0.02) == 2
    assert (await store.counts())["idempotency_keys"] == 0


async def test_reap_idempotency_running_too_drops_claims_never_completed(store: Store) -> None:
    running, completed = idem("running"), idem("completed")
    await store.claim_idempotency(running, 3600)
    await store.claim_idempotency(completed, 3600)
    await store.commit_turn(
        TurnCommit(
            tenant_id="tenant-a",
            turn=new_turn(),
            messages=chat(2),
            new_conversation=NewConversation(id="c", title=None, model=None),
            response=StoredResponse(key=completed, stream=False, response=b"{}", headers={}),
        )
    )
    assert await store.reap_idempotency(3600) == 0
    assert await store.reap_idempotency(3600, running_too=True) == 1
    assert await store.claim_idempotency(running, 3600) is None  # free again
    held = await store.claim_idempotency(completed, 3600)
    assert held is not None and held.status == "completed"


# -- owners: a start-up sweep touches only the server's own -------------------------------


async def test_sweeps_touch_only_this_servers_turns_and_claims(
    store: Store, other_server: Store
) -> None:
    conv = await create(store, "tenant-a", "conv-1", chat(2))
    mine, theirs = new_turn(status="running"), new_turn(status="running")
    await store.record_turn(conv.pk, mine)
    await other_server.record_turn(conv.pk, theirs)
    assert await store.claim_idempotency(idem("mine"), 3600) is None
    assert await other_server.claim_idempotency(idem("theirs"), 3600) is None

    error = {"code": "server_restarted", "message": "the server stopped"}
    assert await store.abandon_running_turns(error) == 1
    assert await store.reap_idempotency(3600, running_too=True) == 1

    gone = await other_server.get_turn("tenant-a", "conv-1", mine.id)
    assert gone is not None and (gone.status, gone.error) == ("incomplete", error)
    alive = await store.get_turn("tenant-a", "conv-1", theirs.id)
    assert alive is not None and (alive.status, alive.error) == ("running", None)
    assert await store.claim_idempotency(idem("mine"), 3600) is None  # dropped: free again
    held = await store.claim_idempotency(idem("theirs"), 3600)
    assert held is not None and held.status == "running"  # still the other server's

    # the other server's own sweep takes its own
    assert await other_server.abandon_running_turns(error) == 1
    assert await other_server.reap_idempotency(3600, running_too=True) == 1
    assert await store.abandon_running_turns(error) == 0


async def test_a_committed_turn_belongs_to_the_server_that_committed_it(
    store: Store, other_server: Store
) -> None:
    """A turn recorded running by one server and committed: no sweep touches it again."""
    conv = await create(store, "tenant-a", "conv-1", chat(2))
    turn = new_turn(status="running")
    await other_server.record_turn(conv.pk, turn)
    turn.status = "completed"
    await append(other_server, conv, chat(2), turn=turn)
    for server in (store, other_server):
        assert await server.abandon_running_turns({"code": "x"}) == 0
    row = await store.get_turn("tenant-a", "conv-1", turn.id)
    assert row is not None and row.status == "completed"


# -- the tool journal ----------------------------------------------------------------------


def step(turn_id: str, call_id: str, round_no: int, started: float, **kw: Any) -> ToolStep:
    fields: dict[str, Any] = {
        "tool": "mcp__ledger__add",
        "source": "mcp:ledger",
        "arguments": '{"a": 2, "b": 3}',
        "status": "ok",
        "output_chars": 1,
        "tenant_id": "tenant-a",
        "conversation_id": "conv-1",
    }
    fields.update(kw)
    return ToolStep(
        turn_id=turn_id,
        call_id=call_id,
        round=round_no,
        started_at=started,
        finished_at=started + 0.5,
        **fields,
    )


async def test_tool_steps_are_journaled_per_turn_in_the_order_they_ran(store: Store) -> None:
    later = step("turn-1", "call-b", 2, 1000.0, status="timeout", output_chars=0)
    first = step("turn-1", "call-a", 1, 2000.0)  # round 1 comes first, whatever its time
    other = step("turn-2", "call-a", 1, 500.0, conversation_id=None, source="none")
    for s in (later, first, other):
        await store.record_tool_step(s)
    assert await store.list_tool_steps("turn-1") == [first, later]
    assert await store.list_tool_steps("turn-2") == [other]  # a call id is per turn
    assert await store.list_tool_steps("turn-unknown") == []
    assert (await store.counts())["tool_steps"] == 3
    # journaling the same call again (a retried write) replaces it, never duplicates it
    await store.record_tool_step(replace(first, status="error"))
    steps = await store.list_tool_steps("turn-1")
    assert [(s.call_id, s.status) for s in steps] == [("call-a", "error"), ("call-b", "timeout")]


# -- the rest of the protocol -------------------------------------------------------------


async def test_a_healthy_store_reports_no_storage_problem(store: Store) -> None:
    assert store.storage_problem() is None
    await create(store, "tenant-a", "conv-1", chat(2))
    assert store.storage_problem() is None


async def test_every_store_method_is_tested() -> None:
    """Each method of the `Store` protocol is called somewhere in this file."""
    methods = {
        name
        for name, member in inspect.getmembers(Store, inspect.isfunction)
        if not name.startswith("_")
    }
    import tests.store_fixtures as fixtures  # open, migrate, close
    import tests.test_store_manage as manage  # the contract's second part

    sources = "".join(inspect.getsource(m) for m in (sys.modules[__name__], manage, fixtures))
    called = set(re.findall(r"\.(\w+)\(", sources))
    assert methods - called == set(), "Store methods no test here calls"
    assert len(methods) > 20
