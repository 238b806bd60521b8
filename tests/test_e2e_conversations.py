"""The conversation management routes on a real server and SQLite file: listing (pagination
edges, filters), PATCH with If-Match, DELETE (rows checked in the file itself), fork at the
first, a middle and the last seq, append without the model (with and without an
Idempotency-Key), export and re-import. Another tenant's 404 on every route is the BOLA matrix
of tests/test_openapi.py, which covers each route of the spec."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support import ScriptedUpstream, TetherServer

pytestmark = pytest.mark.e2e
SUMMARISER = "New messages to fold in"  # matches only the summariser's request


@dataclass
class Srv:
    server: TetherServer
    a: str
    b: str

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {key or self.a}", **kw.pop("headers", {})}
        return httpx2.request(method, self.server.url + path, headers=headers, timeout=30, **kw)

    def chat(self, cid: str, text: str, key: str | None = None) -> httpx2.Response:
        body = {"model": "scripted", "messages": [{"role": "user", "content": text}]}
        r = self.call(
            "POST", "/v1/chat/completions", key, json=body, headers={"X-Tether-Conversation": cid}
        )
        assert r.status_code == 200, r.text
        return r


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream) -> Iterator[Srv]:
    server = TetherServer(
        tmp_path_factory.mktemp("manage") / "tether.db",
        scripted.base_url,
        # a small window and tail: POST …/compact has something to cut
        TETHER_MODEL_CONTEXT_WINDOWS='{"scripted": 2000}',
        TETHER_COMPACTION_MIN_TAIL_MESSAGES="2",
    )
    keys = Srv(server, server.create_key("tenant-a"), server.create_key("tenant-b"))
    server.start()
    yield keys
    server.stop()


def long(text: str) -> str:
    """Text long enough that the small window's compaction has something to cut."""
    return text + " " + " ".join(f"w{i}" for i in range(150))


def listed(s: Srv, key: str | None = None, **params: Any) -> dict[str, Any]:
    r = s.call("GET", "/v1/conversations", key, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_list_pages_edges_and_filters(srv: Srv, upstream: ScriptedUpstream) -> None:
    assert listed(srv, srv.b) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }  # an empty list
    for name in ("list-1", "list-2", "list-3"):
        srv.chat(name, f"{name} about lisbon")
    mine = [c["id"] for c in listed(srv, limit=100)["data"] if c["id"].startswith("list-")]
    assert mine == ["list-3", "list-2", "list-1"]  # newest activity first
    assert listed(srv, srv.b)["data"] == []  # the other tenant sees none of them
    # exactly one page, then pages of two, then after the last
    assert listed(srv, limit=len(listed(srv, limit=100)["data"]))["has_more"] is False
    first = listed(srv, limit=2)
    assert [c["id"] for c in first["data"]] == ["list-3", "list-2"] and first["has_more"]
    assert first["last_id"] == "list-2"
    rest = listed(srv, limit=100, after=first["last_id"])
    assert rest["data"][0]["id"] == "list-1"
    assert listed(srv, after=rest["last_id"])["data"] == []
    missing = srv.call("GET", "/v1/conversations", params={"after": "no-such"})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "after"
    bad = srv.call("GET", "/v1/conversations", params={"limit": "0"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    # filters: title, metadata, forked_from, model, created range
    patched = srv.call("PATCH", "/v1/conversations/list-2", json={"metadata": {"team": "x"}})
    assert patched.status_code == 200, patched.text
    assert [c["id"] for c in listed(srv, **{"metadata[team]": "x"})["data"]] == ["list-2"]
    assert [c["id"] for c in listed(srv, q="LIST-3 ABOUT")["data"]] == ["list-3"]
    fork = srv.call("POST", "/v1/conversations/list-1/fork", json={"at_seq": 1, "id": "list-f"})
    assert fork.status_code == 201, fork.text
    assert [c["id"] for c in listed(srv, forked_from="list-1")["data"]] == ["list-f"]
    assert listed(srv, model="another-model")["data"] == []
    created = fork.json()["created_at"]
    assert [c["id"] for c in listed(srv, created_after=created - 1e-6)["data"]] == ["list-f"]
    assert "list-f" not in [c["id"] for c in listed(srv, limit=100, created_before=created)["data"]]


def test_get_and_patch_honour_if_match(srv: Srv, upstream: ScriptedUpstream) -> None:
    srv.chat("patch-1", "hello")
    got = srv.call("GET", "/v1/conversations/patch-1")
    body = got.json()
    assert got.headers["etag"] == '"v2"' and body["message_count"] == 2
    assert body["metadata"] == {} and body["checkpoints"] == [] and body["aliases"] == []
    assert body["context"]["messages_in_view"] == 2 and body["context"]["window"] > 0
    srv.chat("patch-1", "moving on")  # the version is now v4
    stale = srv.call(
        "PATCH", "/v1/conversations/patch-1", json={"title": "T"}, headers={"If-Match": '"v2"'}
    )
    assert stale.status_code == 412 and stale.headers["etag"] == '"v4"'
    assert stale.json()["error"]["code"] == "precondition_failed"
    assert srv.call("GET", "/v1/conversations/patch-1").json()["title"] != "T"
    ok = srv.call(
        "PATCH",
        "/v1/conversations/patch-1",
        json={"title": "T", "metadata": {"k": "v"}},
        headers={"If-Match": '"v4"'},
    )
    assert ok.status_code == 200 and (ok.json()["title"], ok.json()["metadata"]) == (
        "T",
        {"k": "v"},
    )
    cleared = srv.call("PATCH", "/v1/conversations/patch-1", json={"title": None})
    assert cleared.json()["title"] is None and cleared.json()["metadata"] == {"k": "v"}
    for bad in (
        {"title": 5},
        {"metadata": {"k": 1}},
        {"colour": "red"},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
    ):
        r = srv.call("PATCH", "/v1/conversations/patch-1", json=bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", bad


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


def test_delete_removes_every_row_from_the_file(srv: Srv, upstream: ScriptedUpstream) -> None:
    db = srv.server.db_path
    srv.chat("doomed", long("the first words"))
    body = {"model": "scripted", "messages": [{"role": "user", "content": long("keyed")}]}
    keyed = srv.call(
        "POST",
        "/v1/chat/completions",
        json=body,
        headers={"X-Tether-Conversation": "doomed", "Idempotency-Key": "del-1"},
    )
    assert keyed.status_code == 200
    secret = "purple elephants tango at midnight"
    # an unspaced CJK run and a long token are single index terms: they must go too
    terms = ("東京秘密計画です", "sk_live_9f8e7d6c5b4a39281706")
    srv.chat("doomed", f"{secret} {terms[0]} {terms[1]}")
    upstream.queue({"match": SUMMARISER, "content": "summary mentioning marmalade voyages"})
    assert srv.call("POST", "/v1/conversations/doomed/compact").json()["compacted"] is True
    out = srv.server.cli("conversations", "alias", "doomed", "doomed-old", "--tenant", "tenant-a")
    assert out.returncode == 0, out.stderr
    assert (
        srv.call(
            "POST", "/v1/conversations/doomed/fork", json={"at_seq": 2, "id": "doomed-fork"}
        ).status_code
        == 201
    )
    (pk,) = rows(db, "SELECT pk FROM conversations WHERE id = 'doomed'")[0]
    turn_ids = [r[0] for r in rows(db, "SELECT id FROM turns WHERE conversation_pk = ?", pk)]
    assert len(turn_ids) == 3
    assert rows(db, "SELECT count(*) FROM idempotency_keys WHERE conversation_pk = ?", pk) == [(1,)]

    via_alias = srv.chat("doomed-old", "a turn by the alias")  # (the server remembers it)
    assert via_alias.headers["x-tether-conversation"] == "doomed"
    r = srv.call("DELETE", "/v1/conversations/doomed-old")  # by its alias
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] is True and r.json()["removed"]["messages"] == 8

    for sql in (
        "SELECT count(*) FROM conversations WHERE pk = ?",
        "SELECT count(*) FROM messages WHERE conversation_pk = ?",
        "SELECT count(*) FROM checkpoints WHERE conversation_pk = ?",
        "SELECT count(*) FROM turns WHERE conversation_pk = ?",
        "SELECT count(*) FROM conversation_aliases WHERE conversation_pk = ?",
        "SELECT count(*) FROM idempotency_keys WHERE conversation_pk = ?",
        "SELECT count(*) FROM search_words WHERE rowid BETWEEN ? << 32 AND (? << 32) + 4294967295",
    ):
        args = (pk, pk) if "search" in sql else (pk,)
        assert rows(db, sql, *args) == [(0,)], sql
    marks = ",".join("?" * len(turn_ids))
    assert rows(db, f"SELECT count(*) FROM tool_steps WHERE turn_id IN ({marks})", *turn_ids) == [
        (0,)
    ]
    assert rows(db, "SELECT count(*) FROM search_words WHERE search_words MATCH 'marmalade'") == [
        (0,)
    ]
    # not just unreachable: the text is gone from the database file and its WAL
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            data = path.read_bytes()
            for gone in (secret, *terms):
                assert gone.encode() not in data, (path, gone)
    # the fork keeps its copied prefix; the deleted ids answer 404; the key is free again
    fork = srv.call("GET", "/v1/conversations/doomed-fork").json()
    assert fork["message_count"] == 2 and fork["forked_from"] is None
    for name in ("doomed", "doomed-old"):
        assert srv.call("GET", f"/v1/conversations/{name}").status_code == 404
    # a turn on the alias now starts a conversation of that name
    assert srv.chat("doomed-old", "anew").headers["x-tether-conversation"] == "doomed-old"
    again = srv.call(
        "POST",
        "/v1/chat/completions",
        json=body,
        headers={"X-Tether-Conversation": "doomed", "Idempotency-Key": "del-1"},
    )
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers


@pytest.mark.parametrize("at", [1, 3, 6])
def test_fork_at_the_first_a_middle_and_the_last_seq(
    srv: Srv, upstream: ScriptedUpstream, at: int
) -> None:
    cid = f"fork-src-{at}"
    for i in range(3):
        srv.chat(cid, f"turn {i}")
    r = srv.call("POST", f"/v1/conversations/{cid}/fork", json={"at_seq": at})
    assert r.status_code == 201, r.text
    fork = r.json()
    assert fork["id"].startswith("conv_") and fork["forked_from"] == {
        "conversation_id": cid,
        "seq": at,
    }
    assert r.headers["x-tether-conversation"] == fork["id"] and r.headers["etag"] == f'"v{at}"'
    parent = srv.call("GET", f"/v1/conversations/{cid}/messages").json()["data"]
    copied = srv.call("GET", f"/v1/conversations/{fork['id']}/messages").json()["data"]
    assert [(m["seq"], m["role"], m["content"]) for m in copied] == [
        (m["seq"], m["role"], m["content"]) for m in parent[:at]
    ]
    # the fork goes on by itself, from its own last seq
    srv.chat(fork["id"], "on the fork")
    assert srv.call("GET", f"/v1/conversations/{fork['id']}").json()["message_count"] == at + 2
    assert srv.call("GET", f"/v1/conversations/{cid}").json()["message_count"] == 6
    for bad in (0, 7):
        r = srv.call("POST", f"/v1/conversations/{cid}/fork", json={"at_seq": bad})
        assert r.status_code == 400, (bad, r.text)
    taken = srv.call("POST", f"/v1/conversations/{cid}/fork", json={"at_seq": 1, "id": cid})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "conversation_exists"


def test_append_without_the_model(srv: Srv, upstream: ScriptedUpstream) -> None:
    srv.chat("voice-1", "call me back")
    calls = len(upstream.chat_bodies())
    note = [
        {"role": "user", "content": "(voice) Can we move it to Friday?"},
        {"role": "assistant", "content": "(voice) Friday at ten works."},
    ]
    r = srv.call("POST", "/v1/conversations/voice-1/messages", json={"messages": note})
    assert r.status_code == 200, r.text
    assert (r.json()["first_seq"], r.json()["last_seq"]) == (3, 4) and r.headers["etag"] == '"v4"'
    # with a key: stored once, the retry replays the answer
    keyed = {"Idempotency-Key": "append-1"}
    more = {"messages": [{"role": "user", "content": "(voice) thanks"}]}
    first = srv.call("POST", "/v1/conversations/voice-1/messages", json=more, headers=keyed)
    retry = srv.call("POST", "/v1/conversations/voice-1/messages", json=more, headers=keyed)
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json() and retry.headers["idempotent-replayed"] == "true"
    reused = srv.call(
        "POST",
        "/v1/conversations/voice-1/messages",
        json={"messages": [{"role": "user", "content": "other"}]},
        headers=keyed,
    )
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
    assert len(upstream.chat_bodies()) == calls  # the model was never called
    seqs = [m["seq"] for m in srv.call("GET", "/v1/conversations/voice-1/messages").json()["data"]]
    assert seqs == [1, 2, 3, 4, 5]
    # validated like a turn: a tool result answering no call, an unknown role; nothing stored
    for bad, status in (
        ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, 422),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400),
        ({"messages": []}, 400),
    ):
        r = srv.call("POST", "/v1/conversations/voice-1/messages", json=bad)
        assert r.status_code == status, (bad, r.text)
    assert srv.call("GET", "/v1/conversations/voice-1").json()["message_count"] == 5
    # the next turn's model sees what was appended
    srv.chat("voice-1", "what day did we pick?")
    sent = upstream.chat_bodies()[-1]["messages"]
    assert any(m.get("content") == "(voice) Friday at ten works." for m in sent)


def test_export_json_and_markdown_and_import_again(
    srv: Srv, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    for i in range(3):
        srv.chat("export-1", long(f"point {i}"))
    upstream.queue({"match": SUMMARISER, "content": "the summary of points"})
    assert srv.call("POST", "/v1/conversations/export-1/compact").json()["compacted"] is True
    md = srv.call("GET", "/v1/conversations/export-1/export", params={"format": "markdown"})
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert "attachment" in md.headers["content-disposition"]
    assert "**Compaction, epoch 1**" in md.text and "> the summary of points" in md.text
    exported = srv.call("GET", "/v1/conversations/export-1/export")
    data = exported.json()
    assert data["object"] == "tether.conversation.export" and len(data["messages"]) == 6
    # (a turn may have compacted by itself before: the queued summary went to one of them)
    assert "the summary of points" in [c["summary"] for c in data["checkpoints"]]
    path = tmp_path / "export.json"
    path.write_bytes(exported.content)
    out = srv.server.cli("conversations", "import", str(path), "--tenant", "tenant-b")
    assert out.returncode == 0, out.stderr
    theirs = srv.call("GET", "/v1/conversations/export-1/messages", srv.b).json()["data"]
    assert [(m["role"], m["content"]) for m in theirs] == [
        (m["role"], m["content"]) for m in data["messages"]
    ]
    again = srv.server.cli("conversations", "import", str(path), "--tenant", "tenant-b")
    assert again.returncode == 0 and "already" in again.stdout
    checkpoints = srv.call("GET", "/v1/conversations/export-1", srv.b).json()["checkpoints"]
    assert [c["summary"] for c in checkpoints] == [c["summary"] for c in data["checkpoints"]]
    bad = srv.call("GET", "/v1/conversations/export-1/export", params={"format": "pdf"})
    assert bad.status_code == 400
