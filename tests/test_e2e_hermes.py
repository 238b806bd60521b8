"""`tether import hermes` as a user runs it (the real CLI, a real SQLite file), then `tether
serve` on that file: a bridge holding the old root session id, or a middle one, continues the
imported conversation. The fixture is the state.db a real Hermes Agent 0.19 run wrote
(../shared/fixtures/hermes)."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support import ScriptedUpstream, TetherServer
from tether.importing import read_hermes

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(os.environ.get("TETHER_HERMES_FIXTURE") or ROOT.parent / "shared/fixtures/hermes")
STATE_DB = FIXTURE / "state.db"
BRIDGE = ("seatalk-room-a7f3c2e9", "20261201_200339_5974c6", "20261201_200341_d46372")


@pytest.fixture(autouse=True)
def fixture_present() -> None:
    if not STATE_DB.is_file():
        pytest.fail(f"the Hermes fixture is not at {FIXTURE} (set TETHER_HERMES_FIXTURE)")


def cell(output: str, label: str) -> str:
    """The value next to `label` in the summary table."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 2 and cells[0] == label:
            return cells[1]
    raise AssertionError(f"no {label!r} row in:\n{output}")


def messages(srv: TetherServer, conversation_id: str) -> dict[str, Any]:
    url = f"{srv.url}/v1/conversations/{conversation_id}/messages"
    resp = httpx2.get(url, params={"limit": 1000})
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def chat(srv: TetherServer, session_id: str, text: str) -> httpx2.Response:
    resp = httpx2.post(
        f"{srv.url}/v1/chat/completions",
        headers={"X-Hermes-Session-Id": session_id},
        json={"model": "scripted", "messages": [{"role": "user", "content": text}]},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return resp


def test_import_twice_then_a_bridge_continues_on_the_old_ids(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    srv = TetherServer(tmp_path / "tether.db", upstream.base_url)
    first = srv.cli("import", "hermes", str(STATE_DB))
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert cell(out, "sessions read") == "9"
    assert cell(out, "conversations imported") == "7 of 7"
    assert cell(out, "messages") == "80"
    assert cell(out, "aliases") == "2"
    assert cell(out, "checkpoints") == "3"
    assert cell(out, "skipped: already imported") == "0"
    assert "80/80" in first.stderr  # the progress bar, on stderr
    counts = srv.counts()
    assert counts["conversations"] == 7 and counts["messages"] == 80
    assert counts["conversation_aliases"] == 2 and counts["checkpoints"] == 3

    second = srv.cli("import", "hermes", str(STATE_DB))
    assert second.returncode == 0, second.stderr
    assert cell(second.stdout, "conversations imported") == "0 of 7"
    assert cell(second.stdout, "skipped: already imported") == "7"
    assert "nothing imported" in second.stdout
    assert srv.counts() == counts

    srv.start()
    try:
        continue_on_old_ids(srv, upstream)
    finally:
        srv.stop()


def continue_on_old_ids(srv: TetherServer, upstream: ScriptedUpstream) -> None:
    root, middle, tip = BRIDGE
    imported = next(c for c in read_hermes(STATE_DB).conversations if c.id == root)
    listed = httpx2.get(
        f"{srv.url}/v1/conversations", params={"metadata[source]": "hermes", "limit": 50}
    ).json()
    assert len(listed["data"]) == 7 and not listed["has_more"]
    detail = httpx2.get(f"{srv.url}/v1/conversations/{middle}").json()
    assert detail["id"] == root and detail["aliases"] == [middle, tip]
    assert [c["covers_through_seq"] for c in detail["checkpoints"]] == [6, 16]
    for sent, text in ((root, "Relay A13 from the old root id"), (middle, "Relay A14 via middle")):
        resp = chat(srv, sent, text)
        assert resp.headers["x-tether-conversation"] == root
        assert resp.headers["x-hermes-session-id"] == root
        assert resp.headers["x-tether-epoch"] == "2"  # on the imported checkpoints
        assert resp.json()["choices"][0]["message"]["content"] == f"echo: {text}"
        # the model sees the latest summary and the messages after it, then the new one
        sent_up = upstream.chat_bodies()[-1]["messages"]
        assert sent_up[0]["role"] == "system" and "tok-A07-dunlin" in sent_up[0]["content"]
        assert sent_up[-1] == {"role": "user", "content": text}
        assert any("tok-A12-whimbrel" in str(m.get("content")) for m in sent_up)
        assert not any("tok-A02-heron" in str(m.get("content")) for m in sent_up[1:])
    page = messages(srv, tip)  # any id of the chain names the one conversation
    assert page["conversation_id"] == root and not page["has_more"]
    data = page["data"]
    assert [m["seq"] for m in data] == list(range(1, 33))  # gapless: 28 imported, 2 turns
    assert [(m["role"], m.get("content")) for m in data[:28]] == [
        (m.role, m.content) for m in imported.messages
    ]
    assert [(m["role"], m["content"]) for m in data[28:]] == [
        ("user", "Relay A13 from the old root id"),
        ("assistant", "echo: Relay A13 from the old root id"),
        ("user", "Relay A14 via middle"),
        ("assistant", "echo: Relay A14 via middle"),
    ]
    # the Hermes-compatible reads: any id of the chain is the one session
    session = httpx2.get(f"{srv.url}/api/sessions/{middle}").json()
    assert (session["id"], session["_lineage_root_id"], session["aliases"]) == (
        root,
        root,
        [middle, tip],
    )
    assert session["source"] == "api_server" and session["message_count"] == 32
    rows = httpx2.get(f"{srv.url}/api/sessions/{tip}/messages").json()
    assert rows["session_id"] == root and [r["id"] for r in rows["data"]] == list(range(1, 33))
    assert rows["data"][-1]["content"] == "echo: Relay A14 via middle"
    sessions = httpx2.get(f"{srv.url}/api/sessions", params={"limit": 50}).json()["data"]
    assert len(sessions) == 7
    fork = next(s for s in sessions if s["id"] == "plan-trip-4a9d-alt")
    assert (
        fork["parent_session_id"] == "plan-trip-4a9d"
        and fork["title"] == "trip plan, coastal route"
    )
    tool = next(m for m in data if m.get("tool_calls"))
    assert tool["content"] is None
    assert tool["tool_calls"][0]["function"]["name"] == "todo"
    assert data[tool["seq"]]["tool_call_id"] == tool["tool_calls"][0]["id"]


def test_a_bad_file_is_one_line_exit_1_and_nothing_written(tmp_path: Path) -> None:
    srv = TetherServer(tmp_path / "tether.db", None)
    assert srv.cli("migrate").returncode == 0
    garbage = tmp_path / "state.db"
    garbage.write_bytes(os.urandom(64 * 1024))
    notes = tmp_path / "notes.db"
    with sqlite3.connect(notes) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    for path, reason in ((garbage, "not an SQLite database"), (notes, "not a Hermes state.db")):
        out = srv.cli("import", "hermes", str(path))
        assert out.returncode == 1
        said = out.stderr.strip()
        assert len(said.splitlines()) == 1 and reason in said and str(path) in said, said
        assert "Traceback" not in out.stderr + out.stdout
        assert srv.counts()["conversations"] == 0
        assert srv.counts()["messages"] == 0


def test_a_tenant_gets_its_own_copy(tmp_path: Path) -> None:
    srv = TetherServer(tmp_path / "tether.db", None)
    assert srv.cli("import", "hermes", str(STATE_DB)).returncode == 0
    acme = srv.cli("import", "hermes", str(STATE_DB), "--tenant", "acme")
    assert acme.returncode == 0, acme.stderr
    assert cell(acme.stdout, "conversations imported") == "7 of 7"
    with srv.db() as db:
        per_tenant = dict(
            db.execute("SELECT tenant_id, count(*) FROM conversations GROUP BY tenant_id")
        )
        fork = db.execute(
            "SELECT f.last_seq, f.forked_from_seq, p.id, p.tenant_id FROM conversations f "
            "JOIN conversations p ON p.pk = f.forked_from_pk "
            "WHERE f.tenant_id = 'acme' AND f.id = 'plan-trip-4a9d-alt'"
        ).fetchone()
    assert per_tenant == {"default": 7, "acme": 7}
    assert fork == (10, 6, "plan-trip-4a9d", "acme")  # a fork of acme's own copy
