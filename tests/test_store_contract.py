"""The contract every `Store` implementation must pass.

Each test runs once per store factory in `STORE_FACTORIES`; today that is only SQLite. A new
backend (PostgreSQL) joins by appending one `pytest.param(factory, id="postgres")`: the factory is
an async context manager that, given the test's tmp_path, yields an unopened store on an empty
database and cleans up after it. The `store` fixture opens, migrates and closes it.

Tests talk to the store only through the `Store` protocol. The SQLite-only tests at the end of
the file are named `test_sqlite_...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tether.model import Checkpoint, Conversation, Message, Turn
from tether.store import open_store
from tether.store.base import ConflictError, NewConversation, Store, TurnCommit
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
}

StoreFactory = Callable[[Path], AbstractAsyncContextManager[Store]]


@contextlib.asynccontextmanager
async def sqlite_factory(tmp_path: Path) -> AsyncIterator[Store]:
    yield open_store(f"sqlite:///{tmp_path}/t.db")


@contextlib.asynccontextmanager
async def memory_factory(tmp_path: Path) -> AsyncIterator[Store]:
    yield open_store("memory://")


STORE_FACTORIES = [
    pytest.param(sqlite_factory, id="sqlite"),
    pytest.param(memory_factory, id="memory"),
]


@pytest.fixture(params=STORE_FACTORIES)
async def unmigrated_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    factory: StoreFactory = request.param
    async with factory(tmp_path) as store:
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture
async def store(unmigrated_store: Store) -> Store:
    await unmigrated_store.migrate()
    return unmigrated_store


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


# -- SQLite only --------------------------------------------------------------------------


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/t.db"


async def test_sqlite_file_is_in_wal_mode(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    await store.open()
    try:
        await store.migrate()
        await create(store, "tenant-a", "conv-1", chat(2))
        with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as conn:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
    finally:
        await store.close()


async def test_sqlite_reopen_keeps_data_and_applies_no_migration(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    await store.open()
    try:
        assert await store.migrate()
        conv = await create(store, "tenant-a", "conv-1", chat(3), system_prompt="S")
        await store.add_api_key("tenant-a", "hash-1", "sk-aaaa")
        messages = await store.load_messages(conv.pk)
    finally:
        await store.close()

    again = open_store(sqlite_url)
    await again.open()
    try:
        assert await again.migrate() == []
        assert await again.resolve("tenant-a", "conv-1") == conv
        assert await again.load_messages(conv.pk) == messages
        assert await again.tenant_for_key("hash-1") == "tenant-a"
    finally:
        await again.close()


async def test_sqlite_write_while_another_process_holds_the_lock_waits_on_the_writer_thread(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Writes run on the event loop's thread with a connection that never waits; when the
    database is locked they wait on the writer thread instead, and the loop stays free."""
    store = open_store(sqlite_url)
    await store.open()
    try:
        await store.migrate()
        await create(store, "tenant-a", "conv-1", chat(2))
        other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing
        write = asyncio.ensure_future(create(store, "tenant-a", "conv-2", chat(2)))
        started = time.monotonic()
        for _ in range(20):  # the loop keeps running while the write waits for the lock
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 2.0  # not stalled for the 5 s busy timeout
        assert not write.done()
        other.execute("ROLLBACK")
        other.close()
        conv = await asyncio.wait_for(write, 5)
        assert conv.last_seq == 2
        assert len(await store.load_messages(conv.pk)) == 2
    finally:
        await store.close()


async def test_sqlite_wal_is_checkpointed_off_the_loop(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's connection never copies the WAL into the database file (that costs an
    fsync); the writer thread does, after every CHECKPOINT_EVERY writes."""
    import tether.store.sqlite_db as sqlite_store

    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 10)
    db = tmp_path / "t.db"
    store = open_store(sqlite_url)
    await store.open()
    try:
        await store.migrate()  # write 1: every table, in the WAL only
        for i in range(8):
            await store.ensure_tenant(f"tenant-{i}")
        await asyncio.sleep(0.2)
        before = db.stat().st_size
        await store.ensure_tenant("tenant-9")  # write 10: a checkpoint on the writer thread
        for _ in range(50):
            await asyncio.sleep(0.02)
            if db.stat().st_size > before:
                break
        assert before <= 4096 < db.stat().st_size
    finally:
        await store.close()
