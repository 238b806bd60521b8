"""OpenAI's Conversations API on Tether's conversations, through the official `openai` SDK against
a real server and the scripted upstream: create with items and metadata, retrieve, update, the
items listed in both orders and paged, items added without the model, one item read, an item
removed from the model's view (the upstream no longer sees it; the transcript keeps it, marked),
and a Responses turn continuing the conversation: one store, two APIs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer, close_sdk_clients, sdk_client
from tests.test_e2e_responses import check

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    s = TetherServer(tmp_path_factory.mktemp("items") / "tether.db", scripted.base_url)
    s.start()
    yield s
    close_sdk_clients(s)
    s.stop()


def sdk(srv: TetherServer) -> openai.OpenAI:
    return sdk_client(srv)


def test_create_list_add_and_continue_with_responses(
    srv: TetherServer, upstream: ScriptedUpstream, spec: dict[str, Any]
) -> None:
    client = sdk(srv)
    conv = client.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": "my name is Ada"},
            {"type": "message", "role": "assistant", "content": "hello Ada"},
        ],
        metadata={"topic": "intro"},
    )
    assert conv.object == "conversation" and conv.metadata == {"topic": "intro"}
    got = client.conversations.retrieve(conv.id)
    assert got.id == conv.id and got.created_at
    raw = httpx2.get(f"{srv.url}/v1/conversations/{conv.id}", timeout=10).json()
    assert raw["message_count"] == 2 and raw["metadata"] == {"topic": "intro"}  # Tether's too
    updated = client.conversations.update(conv.id, metadata={"topic": "names"})
    assert updated.metadata == {"topic": "names"}
    listed = client.conversations.items.list(conv.id, order="asc")
    assert [(i.type, i.role, i.content[0].text) for i in listed.data] == [  # type: ignore[union-attr]
        ("message", "user", "my name is Ada"),
        ("message", "assistant", "hello Ada"),
    ]
    for item in httpx2.get(f"{srv.url}/v1/conversations/{conv.id}/items", timeout=10).json()[
        "data"
    ]:
        check(spec, "Message", item)
    added = client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": "a side note"}]
    )
    assert [i.id for i in added.data] == ["msg_3"]
    one = client.conversations.items.retrieve("msg_3", conversation_id=conv.id)
    assert one.content[0].text == "a side note"  # type: ignore[union-attr]
    # a Responses turn continues it: the model sees every item
    answer = client.responses.create(model="scripted", input="who am I?", conversation=conv.id)
    assert answer.output_text == "echo: who am I?"
    sent = upstream.chat_bodies()[-1]["messages"]
    assert [m["content"] for m in sent] == [
        "my name is Ada",
        "hello Ada",
        "a side note",
        "who am I?",
    ]
    newest = client.conversations.items.list(conv.id)  # desc by default
    assert [i.id for i in newest.data] == ["msg_5", "msg_4", "msg_3", "msg_2", "msg_1"]


def test_pages_and_removing_an_item(srv: TetherServer, upstream: ScriptedUpstream) -> None:
    client = sdk(srv)
    call = {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"}
    conv = client.conversations.create(
        items=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "secret: 1234"},
            call,  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": "c1", "output": "found"},
            {"role": "user", "content": "four"},
        ]
    )
    ids = ["msg_1", "msg_2", "msg_3", "fc_4_0", "fco_5", "msg_6"]
    pages, after = [], None
    while True:
        page = httpx2.get(
            f"{srv.url}/v1/conversations/{conv.id}/items",
            params={"order": "asc", "limit": 2, **({"after": after} if after else {})},
            timeout=10,
        ).json()
        pages.append([i["id"] for i in page["data"]])
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert pages == [ids[0:2], ids[2:4], ids[4:6]]
    assert [i.id for i in client.conversations.items.list(conv.id, limit=4)] == ids[
        ::-1
    ]  # auto-paged
    after_last = httpx2.get(
        f"{srv.url}/v1/conversations/{conv.id}/items", params={"after": "msg_99"}, timeout=10
    )
    assert after_last.status_code == 404
    # removing: the secret leaves the model's view; removing the call takes its output too
    left = client.conversations.items.delete("msg_3", conversation_id=conv.id)
    assert left.id == conv.id
    client.conversations.items.delete("fco_5", conversation_id=conv.id)
    remaining = [i.id for i in client.conversations.items.list(conv.id, order="asc")]
    assert remaining == ["msg_1", "msg_2", "msg_6"]
    gone = httpx2.get(f"{srv.url}/v1/conversations/{conv.id}/items/msg_3", timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "item_not_found"
    client.responses.create(model="scripted", input="and now?", conversation=conv.id)
    sent = upstream.chat_bodies()[-1]["messages"]
    assert [m.get("content") for m in sent] == ["one", "two", "four", "and now?"]
    # the transcript keeps every message, with its seq, marked removed
    transcript = httpx2.get(f"{srv.url}/v1/conversations/{conv.id}/messages", timeout=10).json()
    marks = [(m["seq"], "tether_removed" in m) for m in transcript["data"]]
    removed = {3, 4, 5}  # the secret, and the call with its output
    assert marks == [(seq, seq in removed) for seq in range(1, 9)]


def test_bad_items_and_foreign_ids(srv: TetherServer) -> None:
    bad = httpx2.post(
        f"{srv.url}/v1/conversations", json={"items": [{"type": "reasoning"}]}, timeout=10
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "items[0].type"
    dangling = httpx2.post(
        f"{srv.url}/v1/conversations",
        json={"items": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
        timeout=10,
    )
    assert dangling.status_code in (400, 422), dangling.text
    conv = httpx2.post(f"{srv.url}/v1/conversations", json={}, timeout=10).json()
    assert conv["message_count"] == 0 and conv["metadata"] == {}
    empty = httpx2.get(f"{srv.url}/v1/conversations/{conv['id']}/items", timeout=10).json()
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    for path in ("items/msg_1", "items/bogus", "items/fc_1"):
        r = httpx2.get(f"{srv.url}/v1/conversations/{conv['id']}/{path}", timeout=10)
        assert r.status_code == 404, (path, r.text)
    none = httpx2.post(
        f"{srv.url}/v1/conversations/{conv['id']}/items", json={"items": []}, timeout=10
    )
    assert none.status_code == 400
