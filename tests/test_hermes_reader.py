"""`read_hermes` on the state.db a real Hermes Agent 0.19 run wrote (../shared/fixtures/hermes,
its README and manifest.json the ground truth), on older schemas, on files that are not Hermes'
or not SQLite, and on synthetic sessions for the cases the fixture has once (two in-place
compactions, a fork of a compressed conversation, a summary carrying a live message)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tether.importing import HermesImport, HermesImportError, read_hermes
from tether.store.base import ImportedConversation

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(os.environ.get("TETHER_HERMES_FIXTURE") or ROOT.parent / "shared/fixtures/hermes")
STATE_DB = FIXTURE / "state.db"
MARKER = "[CONTEXT COMPACTION — REFERENCE ONLY]"
BRIDGE = ("seatalk-room-a7f3c2e9", "20261201_200339_5974c6", "20261201_200341_d46372")
INPLACE = "longrun-inplace-d4c8"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    if not (FIXTURE / "manifest.json").is_file():
        pytest.fail(f"the Hermes fixture is not at {FIXTURE} (set TETHER_HERMES_FIXTURE)")
    data: dict[str, Any] = json.loads((FIXTURE / "manifest.json").read_text())
    return data


@pytest.fixture(scope="module")
def imported(manifest: dict[str, Any]) -> HermesImport:
    return read_hermes(STATE_DB)


def by_id(result: HermesImport) -> dict[str, ImportedConversation]:
    return {c.id: c for c in result.conversations}


def texts(conv: ImportedConversation, role: str) -> list[Any]:
    return [m.content for m in conv.messages if m.role == role and m.content is not None]


def test_every_conversation_of_the_manifest_in_order_once(
    manifest: dict[str, Any], imported: HermesImport
) -> None:
    convs = by_id(imported)
    assert len(convs) == len(manifest["conversations"]) == 7
    for entry in manifest["conversations"]:
        conv = convs[entry["chain"][0]]
        assert texts(conv, "user") == entry["user_texts"], entry["name"]
        assert texts(conv, "assistant") == [t["assistant_reply"] for t in entry["turns"]]
        assert [m.seq for m in conv.messages] == list(range(1, len(conv.messages) + 1))
        assert all(m.tokens == 0 for m in conv.messages)
        stamps = [m.created_at for m in conv.messages]
        assert conv.updated_at == max(conv.created_at, stamps[-1])
    assert imported.sessions_read == manifest["summary"]["n_sessions"] == 9
    assert imported.rows_read == manifest["summary"]["n_messages"] == 109
    assert imported.skipped == [] and imported.notes == []
    assert imported.schema_version == 22


def test_the_bridge_chain_is_one_conversation_with_its_children_as_aliases(
    imported: HermesImport,
) -> None:
    convs = by_id(imported)
    bridge = convs[BRIDGE[0]]
    assert bridge.aliases == list(BRIDGE[1:])
    assert not any(sid in convs for sid in BRIDGE[1:])
    assert all(c.aliases == [] for c in convs.values() if c.id != BRIDGE[0])
    assert bridge.created_at == pytest.approx(1796155417.7499917)  # the root's started_at
    assert bridge.model == "fake-model" and bridge.title is None
    assert bridge.system_prompt and bridge.system_prompt.startswith("You are Hermes Agent")
    assert bridge.metadata["source"] == "hermes"
    assert bridge.metadata["hermes_source"] == "api_server"
    assert all(isinstance(v, str) for c in convs.values() for v in c.metadata.values())
    # no compaction summary became a message
    assert not any(MARKER in str(m.content) for c in convs.values() for m in c.messages)


def test_each_summary_is_a_checkpoint_over_what_it_replaced(imported: HermesImport) -> None:
    convs = by_id(imported)
    assert sum(len(c.checkpoints) for c in convs.values()) == 3
    bridge, inplace = convs[BRIDGE[0]], convs[INPLACE]
    stamps = summary_stamps()
    for conv, quoted, tail_starts in (
        (bridge, ["tok-A03-osprey", "tok-A07-dunlin"], ["Relay A04", "Relay A08"]),
        (inplace, ["ip-A3-umber"], ["Engine room watch A step 4"]),
    ):
        assert len(conv.checkpoints) == len(quoted)
        for cp, token, tail in zip(conv.checkpoints, quoted, tail_starts, strict=True):
            assert MARKER in cp.summary and token in cp.summary
            covered = conv.messages[: cp.covers_through_seq]
            # the newest user message it summarises is covered; the kept tail starts after it
            assert token in str([m.content for m in covered if m.role == "user"][-1])
            first_kept = conv.messages[cp.covers_through_seq]
            assert first_kept.role == "user" and first_kept.content.startswith(tail)
            assert cp.model == "fake-model"
            assert cp.created_at in stamps
    assert [c.covers_through_seq for c in bridge.checkpoints] == [6, 16]
    assert [c.covers_through_seq for c in inplace.checkpoints] == [6]


def summary_stamps() -> set[float]:
    with sqlite3.connect(f"file:{STATE_DB}?mode=ro&immutable=1", uri=True) as db:
        rows = db.execute(
            "SELECT timestamp FROM messages WHERE content LIKE '%CONTEXT COMPACTION%'"
        )
        return {r[0] for r in rows}


def test_in_place_compaction_keeps_the_originals_and_the_new_rows(
    manifest: dict[str, Any], imported: HermesImport
) -> None:
    conv = by_id(imported)[INPLACE]
    # 11 originals (active=0, compacted=1) + the compressing turn's reply and two more turns;
    # the new generation's head and tail copies are not there
    assert len(conv.messages) == 16
    tokens = next(c for c in manifest["conversations"] if c["name"] == "inplace")["user_tokens"]
    users = texts(conv, "user")
    assert [sum(t in u for u in users) for t in tokens] == [1] * 7


def test_the_fork_is_a_fork_of_its_source_after_it(
    manifest: dict[str, Any], imported: HermesImport
) -> None:
    order = [c.id for c in imported.conversations]
    assert order.index("plan-trip-4a9d") < order.index("plan-trip-4a9d-alt")
    convs = by_id(imported)
    source, fork = convs["plan-trip-4a9d"], convs["plan-trip-4a9d-alt"]
    entry = next(c for c in manifest["conversations"] if c["name"] == "fork_branch")
    assert fork.forked_from == "plan-trip-4a9d"
    assert fork.forked_from_seq == entry["inherited_message_rows"] == 6
    assert [(m.role, m.content) for m in fork.messages[:6]] == [
        (m.role, m.content) for m in source.messages[:6]
    ]
    assert fork.title == "trip plan, coastal route"
    assert fork.metadata["hermes_parent_session_id"] == "plan-trip-4a9d"
    assert source.forked_from is None and len(source.messages) == 8  # its turn after the fork
    assert len(fork.messages) == 10


def test_tool_calls_in_the_openai_shape_and_their_results_linked(
    manifest: dict[str, Any], imported: HermesImport
) -> None:
    conv = by_id(imported)["ops-todo-3f2a91"]
    entry = next(c for c in manifest["conversations"] if c["name"] == "tool")
    hermes_call = entry["tool_call_rows"][0]["tool_calls"][0]
    calls = [m for m in conv.messages if m.tool_calls]
    assert len(calls) == 1 and calls[0].content is None and calls[0].role == "assistant"
    assert calls[0].tool_calls == [
        {"id": "call_fake_20", "type": "function", "function": hermes_call["function"]}
    ]
    result = conv.messages[calls[0].seq]  # the row right after the call
    expected = entry["tool_result_rows"][0]
    assert (result.role, result.tool_call_id, result.name) == ("tool", "call_fake_20", "todo")
    assert result.content == expected["content"]
    assert conv.messages[result.seq].role == "assistant"  # then the final reply
    for c in imported.conversations:  # every tool result answers the call just before it
        for m in c.messages:
            if m.role == "tool":
                before = c.messages[m.seq - 2]
                assert m.tool_call_id in [t["id"] for t in before.tool_calls or []]


def test_chinese_and_japanese_text_is_intact(imported: HermesImport) -> None:
    users = texts(by_id(imported)["cjk-notes-71e0"], "user")
    assert users[0].endswith("标记：甲一青龙") and "李明" in users[0]
    assert users[1].endswith("印：乙二桜吹雪") and "田中さん" in users[1]
    assert users[2].startswith("最后一个问题 / 最後の質問")


def test_reading_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    copy = tmp_path / "state.db"
    shutil.copyfile(STATE_DB, copy)
    read_hermes(copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]
    assert copy.read_bytes() == STATE_DB.read_bytes()


def test_rows_still_in_the_wal_are_read(tmp_path: Path) -> None:
    """Hermes running (or stopped uncleanly) leaves rows in state.db-wal: they count."""
    copy = tmp_path / "state.db"
    shutil.copyfile(STATE_DB, copy)
    live = sqlite3.connect(copy)
    try:
        live.execute("PRAGMA wal_autocheckpoint = 0")
        live.execute(
            "INSERT INTO messages (session_id, role, content, timestamp) "
            "VALUES ('quick-ping-0b6e', 'user', 'still in the WAL', 1796155500.0)"
        )
        live.commit()
        assert (tmp_path / "state.db-wal").stat().st_size > 0
        conv = by_id(read_hermes(copy))["quick-ping-0b6e"]
        assert conv.messages[-1].content == "still in the WAL"
    finally:
        live.close()


def test_files_that_are_not_hermes_databases_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    half = tmp_path / "half.db"
    with sqlite3.connect(half) as db:
        db.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY)")
        db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id TEXT, body TEXT)")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    cases = {
        garbage: "not an SQLite database",
        other: "not a Hermes state.db: no `sessions` table",
        half: "not a Hermes state.db: the `messages` table has no column role, content",
        empty: "not an SQLite database",
        tmp_path / "missing.db": "no such file",
        tmp_path: "not a file",
    }
    for path, reason in cases.items():
        with pytest.raises(HermesImportError) as caught:
            read_hermes(path)
        message = str(caught.value)
        assert message == f"{path}: {reason}" or message.startswith(f"{path}: {reason}")
        assert "\n" not in message


def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    page, data = 4096, STATE_DB.read_bytes()
    one = bytearray(data)  # one b-tree page of `sessions`: the schema still reads
    one[5 * page + 8 : 5 * page + 200] = os.urandom(192)
    every = bytearray(data)  # every page but the first
    for n in range(1, len(data) // page):
        every[n * page : n * page + 64] = os.urandom(64)
    cases = {"one.db": bytes(one), "every.db": bytes(every), "truncated.db": data[: 40 * page]}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(HermesImportError) as caught:
            read_hermes(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert "malformed" in message or "damaged" in message, message


def test_an_older_schema_without_active_and_compacted_still_reads(
    tmp_path: Path, imported: HermesImport
) -> None:
    """Hermes before in-place compaction had no `active`/`compacted` columns (nor reasoning,
    codex or api_content); its sessions were never compacted in place."""
    old = tmp_path / "old.db"
    shutil.copyfile(STATE_DB, old)
    with sqlite3.connect(old) as db:
        db.executescript(
            f"""
            CREATE TABLE messages_old (
                id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, role TEXT NOT NULL,
                content TEXT, tool_call_id TEXT, tool_calls TEXT, tool_name TEXT,
                timestamp REAL NOT NULL, token_count INTEGER, finish_reason TEXT);
            INSERT INTO messages_old SELECT id, session_id, role, content, tool_call_id,
                tool_calls, tool_name, timestamp, token_count, finish_reason
                FROM messages WHERE session_id != '{INPLACE}';
            DROP TABLE messages;
            ALTER TABLE messages_old RENAME TO messages;
            DELETE FROM sessions WHERE id = '{INPLACE}';
            """
        )
    columns = {r[1] for r in sqlite3.connect(old).execute("PRAGMA table_info(messages)")}
    assert "active" not in columns and "compacted" not in columns
    again = read_hermes(old)
    expected = {c.id: c for c in imported.conversations if c.id != INPLACE}
    assert by_id(again).keys() == expected.keys()
    for conv in again.conversations:
        want = expected[conv.id]
        assert conv.messages == want.messages
        assert (conv.aliases, conv.forked_from, conv.forked_from_seq) == (
            want.aliases,
            want.forked_from,
            want.forked_from_seq,
        )
        assert conv.checkpoints == want.checkpoints


# --- synthetic sessions, on the fixture's own schema ---------------------------------------


def hermes_schema() -> str:
    """The fixture's `.schema` output, runnable (SQLite makes sqlite_sequence itself)."""
    return (
        (FIXTURE / "schema.sql").read_text().replace("CREATE TABLE sqlite_sequence(name,seq);", "")
    )


def synthetic(tmp_path: Path, sessions: list[dict[str, Any]], rows: list[tuple[Any, ...]]) -> Path:
    """A Hermes-shaped file: `sessions` as dicts, `rows` as (session, role, content[, active,
    compacted[, tool_calls, tool_call_id]])."""
    path = tmp_path / "synthetic.db"
    with sqlite3.connect(path) as db:
        db.executescript(hermes_schema())
        for n, s in enumerate(sessions):
            db.execute(
                "INSERT INTO sessions (id, source, parent_session_id, end_reason, started_at, "
                "model) VALUES (?, 'cli', ?, ?, ?, 'm')",
                (s["id"], s.get("parent"), s.get("end"), 1000.0 + n),
            )
        for n, (sid, role, content, *rest) in enumerate(rows):
            active, compacted, calls, call_id = (*rest, *(1, 0, None, None)[len(rest) :])
            db.execute(
                "INSERT INTO messages (session_id, role, content, timestamp, active, compacted, "
                "tool_calls, tool_call_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sid, role, content, 2000.0 + n, active, compacted, calls, call_id),
            )
    return path


def turn(sid: str, n: int, **flags: int) -> list[tuple[Any, ...]]:
    state = (flags.get("active", 1), flags.get("compacted", 0))
    return [(sid, "user", f"ask {n}", *state), (sid, "assistant", f"answer {n}", *state)]


SUMMARY = "[CONTEXT COMPACTION — REFERENCE ONLY] summary {}\n--- END OF CONTEXT SUMMARY ---"


def test_two_in_place_compactions(tmp_path: Path) -> None:
    s = "twice"
    old = {"active": 0, "compacted": 1}
    rows = [
        *turn(s, 1, **old), *turn(s, 2, **old), *turn(s, 3, **old),  # generation 1
        *turn(s, 1, **old)[:1], (s, "assistant", SUMMARY.format(1), 0, 1),  # generation 2:
        *turn(s, 3, **old), *turn(s, 4, **old), *turn(s, 5, **old),  # head, summary, tail, new
        *turn(s, 1)[:1], (s, "assistant", SUMMARY.format(2)),  # generation 3 (active)
        *turn(s, 5), *turn(s, 6),
    ]  # fmt: skip
    conv = read_hermes(synthetic(tmp_path, [{"id": s}], rows)).conversations[0]
    assert texts(conv, "user") == [f"ask {n}" for n in range(1, 7)]
    assert texts(conv, "assistant") == [f"answer {n}" for n in range(1, 7)]
    assert [c.covers_through_seq for c in conv.checkpoints] == [4, 8]
    assert [c.summary.split("\n")[0][-9:] for c in conv.checkpoints] == ["summary 1", "summary 2"]


def test_a_fork_of_a_compressed_conversation_and_a_summary_carrying_the_next_ask(
    tmp_path: Path,
) -> None:
    carrier = SUMMARY.format(1) + "\nask 4"  # newer Hermes: the summary and the live ask
    sessions = [
        {"id": "root", "end": "compression"},
        {"id": "child", "parent": "root", "end": "branched"},
        {"id": "fork", "parent": "child"},
    ]
    rows = [
        *turn("root", 1), *turn("root", 2), *turn("root", 3)[:1],
        *turn("child", 1)[:1], ("child", "user", carrier), ("child", "assistant", "answer 4"),
        *turn("child", 5),
        *turn("fork", 1)[:1], ("fork", "user", carrier), ("fork", "assistant", "answer 4"),
        *turn("fork", 9),
    ]  # fmt: skip
    result = read_hermes(synthetic(tmp_path, sessions, rows))
    root, fork = result.conversations
    assert (root.id, root.aliases) == ("root", ["child"])
    assert texts(root, "user") == ["ask 1", "ask 2", "ask 3", "ask 4", "ask 5"]
    assert [c.covers_through_seq for c in root.checkpoints] == [5]
    assert (fork.id, fork.forked_from, fork.forked_from_seq) == ("fork", "root", 7)
    assert texts(fork, "user") == ["ask 1", "ask 2", "ask 3", "ask 4", "ask 9"]
    assert fork.checkpoints == root.checkpoints  # within its copied prefix


def test_sessions_that_cannot_be_imported_are_skipped_with_a_reason(tmp_path: Path) -> None:
    sessions = [{"id": "empty"}, {"id": "bad id/with slash"}, {"id": "ok"}]
    rows = [*turn("bad id/with slash", 1), *turn("ok", 1), ("ok", "session_meta", "x")]
    result = read_hermes(synthetic(tmp_path, sessions, rows))
    assert [c.id for c in result.conversations] == ["ok"]
    reasons = {s.session_id: s.reason for s in result.skipped}
    assert reasons["empty"] == "no messages"
    assert reasons["bad id/with slash"].startswith("its id is not usable in Tether")
    assert result.notes == ["ok: 1 row(s) with role 'session_meta' left out"]
