"""The store contract, part two: conversation management (listing with filters and keyset
pages, update, delete, fork, import, aliases, turn listings) and search, on every store of
tests/test_store_contract.py (whose fixtures and helpers this file uses; its
test_every_store_method_is_tested counts the calls made here too)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from tests.test_store_contract import append, chat, checkpoint, create, new_turn
from tether.model import Message, ToolStep
from tether.store.base import (
    ConversationFilter,
    IdempotencyKey,
    ImportedCheckpoint,
    ImportedConversation,
    NewConversation,
    SearchQuery,
    Store,
    StoredResponse,
    TurnCommit,
)
from tether.store.errors import ConflictError, QueryError

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def ids(store: Store, tenant: str = "t", **kw: object) -> list[str]:
    return [c.id for c in await store.list_conversations(tenant, **kw)]  # type: ignore[arg-type]


# -- listing ------------------------------------------------------------------------------


async def test_keyset_pages_cover_every_conversation_once_newest_first(store: Store) -> None:
    assert await ids(store) == []  # empty
    made = []
    for i in range(5):
        made.append(await create(store, "t", f"c{i}", chat(2)))
    await create(store, "other", "c9", chat(2))
    assert await ids(store) == ["c4", "c3", "c2", "c1", "c0"]
    first = await store.list_conversations("t", 2)
    assert [c.id for c in first] == ["c4", "c3"]
    second = await store.list_conversations("t", 2, after=first[-1])
    assert [c.id for c in second] == ["c2", "c1"]
    third = await store.list_conversations("t", 2, after=second[-1])
    assert [c.id for c in third] == ["c0"]
    assert await store.list_conversations("t", 2, after=third[-1]) == []  # after the last
    # exactly one page
    assert len(await store.list_conversations("t", 5)) == 5
    # activity moves a conversation to the front
    await append(store, made[1], chat(2, "more"))
    assert (await ids(store))[0] == "c1"


async def test_list_filters(store: Store) -> None:
    a = await create(store, "t", "alpha", chat(2), title="Trip to Lisbon", model="m1")
    await create(store, "t", "beta", chat(2), title="Budget review", model="m2")
    await store.update_conversation(
        a.pk, metadata={"team": "travel", "tier": "gold", 'odd "key".$[0]': "v"}
    )
    fork = await store.fork_conversation("t", a.pk, 1, "alpha-fork")
    assert await ids(store, filters=ConversationFilter(title="lisbon")) == ["alpha-fork", "alpha"]
    assert await ids(store, filters=ConversationFilter(model="m2")) == ["beta"]
    assert await ids(store, filters=ConversationFilter(forked_from="alpha")) == ["alpha-fork"]
    assert await ids(store, filters=ConversationFilter(metadata={"team": "travel"})) == [
        "alpha-fork",
        "alpha",
    ]  # a fork keeps its parent's metadata
    odd = ConversationFilter(metadata={'odd "key".$[0]': "v"})
    assert await ids(store, filters=odd) == ["alpha-fork", "alpha"]
    both = ConversationFilter(metadata={"team": "travel", "tier": "silver"})
    assert await ids(store, filters=both) == []
    after = ConversationFilter(created_after=fork.created_at - 0.000001)
    assert await ids(store, filters=after) == ["alpha-fork"]
    before = ConversationFilter(created_before=fork.created_at)
    assert await ids(store, filters=before) == ["beta", "alpha"]


# -- update, aliases, turns ----------------------------------------------------------------


async def test_update_title_and_metadata_and_a_stale_version(store: Store) -> None:
    conv = await create(store, "t", "c", chat(2), title="old")
    updated = await store.update_conversation(conv.pk, title="new", metadata={"k": "v"})
    assert (updated.title, updated.metadata) == ("new", {"k": "v"})
    resolved = await store.resolve("t", "c")
    assert resolved is not None and (resolved.title, resolved.metadata) == ("new", {"k": "v"})
    kept = await store.update_conversation(conv.pk, metadata={"k2": "v2"})
    assert (kept.title, kept.metadata) == ("new", {"k2": "v2"})  # metadata replaced whole
    cleared = await store.update_conversation(conv.pk, clear_title=True, metadata={})
    assert (cleared.title, cleared.metadata) == (None, None)
    await append(store, conv, chat(2, "x"))
    with pytest.raises(ConflictError):
        await store.update_conversation(conv.pk, title="late", expected_last_seq=2)
    assert (await store.update_conversation(conv.pk, title="ok", expected_last_seq=4)).title == "ok"


async def test_removed_messages_stay_in_the_transcript_marked(store: Store) -> None:
    conv = await create(store, "t", "c", chat(4))
    assert await store.remove_messages(conv.pk, [2, 3], 1234.5) == 2
    assert await store.remove_messages(conv.pk, [3, 9], 2000.0) == 0  # already, or no such seq
    loaded = await store.load_conversation("t", "c", True)
    assert [(m.seq, m.removed) for m in loaded.messages or []] == [
        (1, False),
        (2, True),
        (3, True),
        (4, False),
    ]
    marked = (loaded.messages or [])[1]
    assert marked.extra == {"tether_removed": 1234.5} and marked.content == "m1"
    assert loaded.conversation is not None and loaded.conversation.last_seq == 4
    assert loaded.conversation.updated_at == 1234.5
    with pytest.raises(ConflictError):
        await store.remove_messages(10**9, [1], 1.0)


async def test_aliases_and_turns_are_listed(store: Store) -> None:
    conv = await create(store, "t", "c", chat(2))
    await store.add_alias("t", "old-id", conv.pk)
    await store.add_alias("t", "older-id", conv.pk)
    assert sorted(await store.list_aliases(conv.pk)) == ["old-id", "older-id"]
    second = new_turn()
    second.started_at += 10
    await append(store, conv, chat(2, "y"), turn=second)
    turns = await store.list_turns(conv.pk)
    assert turns[0].id == second.id and len(turns) == 2  # newest first
    assert (turns[0].first_seq, turns[0].last_seq, turns[0].conversation_id) == (3, 4, "c")
    assert len(await store.list_turns(conv.pk, limit=1)) == 1
    found = await store.find_turn("t", second.id)  # by its id alone (a response id)
    assert found is not None and (found.conversation_id, found.first_seq) == ("c", 3)
    assert await store.find_turn("other-tenant", second.id) is None
    assert await store.find_turn("t", "turn-unknown") is None
    # a note set on the record keeps the rest of it; another tenant's turn is not touched
    assert await store.note_turn("t", second.id, "response_deleted", 99.5)
    assert not await store.note_turn("other-tenant", second.id, "x", 1)
    assert not await store.note_turn("t", "turn-unknown", "x", 1)
    noted = await store.find_turn("t", second.id)
    assert noted is not None and (noted.first_seq, noted.last_seq) == (3, 4)
    assert noted.notes is not None and noted.notes["response_deleted"] == 99.5
    assert "x" not in noted.notes


# -- fork ----------------------------------------------------------------------------------


@pytest.mark.parametrize("at", [1, 3, 6])
async def test_fork_at_the_first_a_middle_and_the_last_seq(store: Store, at: int) -> None:
    parent = await create(store, "t", "p", chat(6), system_prompt="be brief", title="P")
    fork = await store.fork_conversation("t", parent.pk, at, "f")
    assert (fork.id, fork.last_seq, fork.forked_from_id, fork.forked_from_seq) == ("f", at, "p", at)
    assert fork.system_prompt == "be brief" and fork.title == "P"
    got = await store.load_messages(fork.pk)
    want = await store.load_messages(parent.pk, through_seq=at)
    assert [(m.seq, m.role, m.content) for m in got] == [(m.seq, m.role, m.content) for m in want]
    # the fork goes on by itself; the parent is untouched
    longer = await append(store, fork, chat(2, "fork-only"))
    assert longer.last_seq == at + 2
    assert (await store.resolve("t", "p")).last_seq == 6  # type: ignore[union-attr]


async def test_fork_refuses_a_seq_outside_the_transcript_and_a_taken_id(store: Store) -> None:
    parent = await create(store, "t", "p", chat(4))
    await create(store, "t", "taken", chat(2))
    for at in (0, 5):
        with pytest.raises(ConflictError):
            await store.fork_conversation("t", parent.pk, at, "f")
    with pytest.raises(ConflictError):
        await store.fork_conversation("t", parent.pk, 2, "taken")
    assert await store.resolve("t", "f") is None


async def test_a_fork_inherits_the_latest_checkpoint_within_its_prefix(store: Store) -> None:
    parent = await create(store, "t", "p", chat(10))
    await store.commit_checkpoint(parent.pk, checkpoint(1, 4))
    await store.commit_checkpoint(parent.pk, checkpoint(2, 8))
    inside = await store.fork_conversation("t", parent.pk, 6, "f6")
    assert inside.epoch == 1
    cp = await store.latest_checkpoint(inside.pk)
    assert cp is not None and (cp.epoch, cp.covers_through_seq, cp.summary) == (
        1,
        4,
        "summary through 4",
    )
    before = await store.fork_conversation("t", parent.pk, 3, "f3")
    assert before.epoch == 0 and await store.latest_checkpoint(before.pk) is None


# -- delete ----------------------------------------------------------------------------------


async def test_delete_removes_everything_the_conversation_owns(store: Store) -> None:
    turn = new_turn()
    key = IdempotencyKey("t", "chat", "key-1", "hash")
    assert await store.claim_idempotency(key, 3600) is None
    conv = await store.commit_turn(
        TurnCommit(
            tenant_id="t",
            turn=turn,
            messages=[Message(role="user", content="the zanzibar plan"), *chat(1)],
            new_conversation=NewConversation(id="doomed", title=None, model="m"),
            response=StoredResponse(key, False, b"{}", {}),
        )
    )
    await store.add_alias("t", "doomed-alias", conv.pk)
    await store.commit_checkpoint(conv.pk, checkpoint(1, 1, summary="zanzibar summary"))
    await store.record_tool_step(
        ToolStep(turn_id=turn.id, call_id="c1", round=1, tool="x", source="builtin",
                 arguments="{}", status="ok", output_chars=1, started_at=1.0, finished_at=2.0,
                 tenant_id="t", conversation_id="doomed")
    )  # fmt: skip
    fork = await store.fork_conversation("t", conv.pk, 2, "survivor")
    keeper = await create(store, "t", "keeper", chat(2))
    before = await store.counts()

    removed = await store.delete_conversation(conv.pk)

    assert removed["messages"] == 2 and removed["conversations"] == 1
    assert removed["conversation_aliases"] == 1 and removed["idempotency_keys"] == 1
    assert removed["tool_steps"] == 1 and removed["checkpoints"] == 1 and removed["turns"] == 1
    after = await store.counts()
    assert after["conversations"] == before["conversations"] - 1
    assert after["messages"] == before["messages"] - 2
    assert after["idempotency_keys"] == before["idempotency_keys"] - 1
    assert after["tool_steps"] == before["tool_steps"] - 1
    assert await store.resolve("t", "doomed") is None
    assert await store.resolve("t", "doomed-alias") is None
    assert await store.claim_idempotency(key, 3600) is None  # the key is free again
    # the fork keeps its copied prefix, and no longer names a parent
    kept = await store.resolve("t", "survivor")
    assert kept is not None and kept.forked_from_id is None and kept.last_seq == 2
    assert (await store.load_messages(fork.pk))[0].content == "the zanzibar plan"
    assert (await store.resolve("t", "keeper")) == keeper
    # searching finds the fork's copies (the message, the checkpoint it inherited), never the
    # deleted conversation's rows
    hits = await store.search("t", SearchQuery(match='"zanzibar"', cjk=False, group=False))
    assert sorted((h.conversation_id, h.kind) for h in hits) == [
        ("survivor", "message"),
        ("survivor", "summary"),
    ]


# -- import ----------------------------------------------------------------------------------


def imported(conv_id: str, n: int, **kw: object) -> ImportedConversation:
    fields: dict[str, object] = {
        "id": conv_id,
        "aliases": [f"{conv_id}-a", f"{conv_id}-b"],
        "title": "imported",
        "model": "old-model",
        "system_prompt": "sys",
        "metadata": {"source": "hermes"},
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_500.0,
        "messages": [replace(m, created_at=1_700_000_000.0 + i) for i, m in enumerate(chat(n))],
        "checkpoints": [ImportedCheckpoint(covers_through_seq=2, summary="old summary",
                                           created_at=1_700_000_100.0)],
    }  # fmt: skip
    fields.update(kw)
    return ImportedConversation(**fields)  # type: ignore[arg-type]


async def test_import_writes_a_whole_conversation_once(store: Store) -> None:
    conv = await store.import_conversation("t", imported("imp", 6))
    assert conv is not None and (conv.last_seq, conv.epoch, conv.title) == (6, 1, "imported")
    assert conv.metadata == {"source": "hermes"} and conv.created_at == 1_700_000_000.0
    for name in ("imp", "imp-a", "imp-b"):
        resolved = await store.resolve("t", name)
        assert resolved is not None and resolved.pk == conv.pk
    messages = await store.load_messages(conv.pk)
    assert [m.content for m in messages] == [f"m{i}" for i in range(6)]
    assert [m.created_at for m in messages] == [1_700_000_000.0 + i for i in range(6)]
    cp = await store.latest_checkpoint(conv.pk)
    assert cp is not None and (cp.epoch, cp.covers_through_seq, cp.summary) == (
        1,
        2,
        "old summary",
    )
    before = await store.counts()
    assert await store.import_conversation("t", imported("imp", 6)) is None  # a second time
    assert await store.import_conversation("t", imported("new", 2, aliases=["imp-b"])) is None
    assert await store.counts() == before
    # a conversation goes on from an import like from any other
    longer = await append(store, conv, chat(2, "after"))
    assert longer.last_seq == 8
    # a fork imported after its parent names it
    child = await store.import_conversation(
        "t", imported("kid", 4, aliases=[], forked_from="imp-a", forked_from_seq=3)
    )
    assert child is not None and (child.forked_from_id, child.forked_from_seq) == ("imp", 3)
    hits = await store.search("t", SearchQuery(match='"summary"', cjk=False, group=False))
    assert {(h.conversation_id, h.kind) for h in hits} == {("imp", "summary"), ("kid", "summary")}


# -- search ----------------------------------------------------------------------------------


async def _corpus(store: Store) -> None:
    await create(store, "t", "tools", [
        Message(role="user", content="what is the weather"),
        Message(role="assistant", tool_calls=[{"id": "c1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]),
        Message(role="tool", tool_call_id="c1", content="drizzle and fjordwind today"),
        Message(role="assistant", content="It is rainy."),
    ])  # fmt: skip
    await create(store, "t", "cjk", [
        Message(role="user", content="明天在东京举行的会议几点开始？"),
        Message(role="assistant", content="会議は午前十時に始まります。"),
    ])  # fmt: skip
    summarised = await create(store, "t", "summary", chat(4, "plain"))
    await store.commit_checkpoint(
        summarised.pk, checkpoint(1, 2, summary="The user chose the quokkaplan for Perth.")
    )
    await create(store, "t", "phrase-apart", [
        Message(role="user", content="the brown cat sat while a quick dog ran off"),
    ])  # fmt: skip
    await create(store, "t", "phrase-exact", [
        Message(role="user", content="a quick brown cat sat on the mat while dogs ran"),
    ])  # fmt: skip
    await create(store, "other", "foreign", [Message(role="user", content="fjordwind again")])


def words(*terms: str) -> SearchQuery:
    quoted = " ".join(f'"{t}"' for t in terms)
    match = quoted if len(terms) == 1 else f'"{" ".join(terms)}" OR ({quoted})'
    return SearchQuery(match=match, cjk=False)


async def test_search_finds_tool_outputs_cjk_and_summaries_in_the_tenant(store: Store) -> None:
    await _corpus(store)
    hits = await store.search("t", words("fjordwind"))
    assert [(h.conversation_id, h.kind, h.role, h.seq) for h in hits] == [
        ("tools", "message", "tool", 3)
    ]  # the other tenant's message never shows
    snippet, (start, end) = hits[0].snippet, hits[0].highlights[0]
    assert snippet[start:end].lower() == "fjordwind"
    chinese = await store.search("t", SearchQuery(match='"东京举行"', cjk=True))
    assert [(h.conversation_id, h.seq) for h in chinese] == [("cjk", 1)]
    japanese = await store.search("t", SearchQuery(match='"午前十時"', cjk=True))
    assert [(h.conversation_id, h.seq) for h in japanese] == [("cjk", 2)]
    short = await store.search("t", SearchQuery(match="", cjk=True, like=["会議"]))
    assert [(h.conversation_id, h.seq) for h in short] == [("cjk", 2)]
    summary = await store.search("t", words("quokkaplan"))
    assert [(h.conversation_id, h.kind, h.epoch, h.seq) for h in summary] == [
        ("summary", "summary", 1, 2)
    ]
    assert await store.search("t", words("nowhere")) == []


async def test_search_ranks_the_exact_phrase_first_and_groups(store: Store) -> None:
    await _corpus(store)
    ranked = await store.search("t", words("quick", "brown", "cat"))
    assert [h.conversation_id for h in ranked] == ["phrase-exact", "phrase-apart"]
    # grouped: one hit per conversation; not grouped: every message
    grouped = await store.search("t", replace(words("plain0"), group=True))
    assert len(grouped) == 1
    every = await store.search("t", SearchQuery(match='"rainy" OR "weather"', cjk=False,
                                                group=False))  # fmt: skip
    assert [h.seq for h in every] in ([1, 4], [4, 1]) and {h.conversation_id for h in every} == {
        "tools"
    }
    one = await store.search("t", SearchQuery(match='"rainy" OR "weather"', cjk=False))
    assert len(one) == 1
    narrowed = replace(words("cat"), filters=ConversationFilter(title="nothing like it"))
    assert await store.search("t", narrowed) == []


async def test_a_malformed_query_is_a_query_error(store: Store) -> None:
    await _corpus(store)
    with pytest.raises(QueryError, match="malformed"):
        await store.search("t", SearchQuery(match='"unbalanced', cjk=False))


async def test_search_rows_follow_a_turns_commit(store: Store) -> None:
    conv = await create(store, "t", "c", chat(2))
    started = time.time()
    await append(store, conv, [Message(role="user", content="a brand new xylograph")])
    hits = await store.search("t", words("xylograph"))
    assert [(h.seq, h.role) for h in hits] == [(3, "user")] and hits[0].created_at >= started


async def test_a_deleted_conversations_pk_is_never_given_again(store: Store) -> None:
    """Else a request that resolved the deleted conversation (its pk) before the delete could
    write into the next conversation created: another tenant's, perhaps."""
    await create(store, "t", "older", chat(2))
    newest = await create(store, "t", "newest", chat(2))
    await store.delete_conversation(newest.pk)
    theirs = await create(store, "other", "theirs", [Message(role="user", content="secret")])
    assert theirs.pk != newest.pk
    with pytest.raises(ConflictError):
        await store.update_conversation(newest.pk, title="late write")
    with pytest.raises(ConflictError):
        await store.fork_conversation("t", newest.pk, 1, "late-fork")
    assert (await store.resolve("other", "theirs")).title is None  # type: ignore[union-attr]
    again = await store.import_conversation("t", imported("after-delete", 2))
    assert again is not None and again.pk not in (newest.pk, theirs.pk)
