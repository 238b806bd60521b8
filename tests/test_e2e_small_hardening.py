"""The smaller points of issue 12, each against a real `tether serve`: C1 control characters in
an Idempotency-Key, a conversation header sent twice with two ids, a bind host that only looks
like loopback, and the page size of `GET …/messages` (100,000 messages were one 14.6 MB
response)."""

from __future__ import annotations

import httpx2
import orjson

from tests.support import TetherServer

CHAT = "/v1/chat/completions"


def post(srv: TetherServer, headers: list[tuple[bytes, bytes]], text: str) -> httpx2.Response:
    body = orjson.dumps({"messages": [{"role": "user", "content": text}]})
    return httpx2.post(
        srv.url + CHAT,
        content=body,
        headers=[(b"content-type", b"application/json"), *headers],
        timeout=30,
    )


def code(resp: httpx2.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["error"]["code"]


def test_c1_controls_in_an_idempotency_key_are_refused(server: TetherServer) -> None:
    for raw in (b"key\x85x", b"key\x9bx", b"key\x80x", b"key\x9fx"):
        resp = post(server, [(b"idempotency-key", raw), (b"x-hermes-session-id", b"c1")], "x")
        assert code(resp) == (400, "invalid_idempotency_key"), (raw, resp.text)
    for raw in (b"key\x7fx", b"key\x01x"):  # C0 and DEL: the HTTP parser refuses them first
        resp = post(server, [(b"idempotency-key", raw), (b"x-hermes-session-id", b"c1")], "x")
        assert code(resp) in {(400, "invalid_http_request"), (400, "invalid_idempotency_key")}
    latin = "cl\u00e9-1".encode("latin-1")  # é is not a control character
    resp = post(server, [(b"idempotency-key", latin), (b"x-hermes-session-id", b"c1")], "x")
    assert resp.status_code == 200, resp.text


def test_a_conversation_header_twice_with_two_ids_is_a_conflict(server: TetherServer) -> None:
    for name in (b"x-hermes-session-id", b"x-tether-conversation"):
        resp = post(server, [(name, b"twice-a"), (name, b"twice-b")], "which one?")
        assert code(resp) == (400, "conflicting_conversation_ids"), resp.text
        assert resp.json()["error"]["param"] == name.decode()
    assert server.transcript("twice-a") == [] and server.transcript("twice-b") == []
    same = [(b"x-hermes-session-id", b"twice-c"), (b"x-hermes-session-id", b"twice-c")]
    assert post(server, same, "the same id twice is one id").status_code == 200


def test_a_host_name_starting_with_127_is_not_loopback(server: TetherServer) -> None:
    """No keys (open mode) is allowed on loopback only; `127.evil.example` is a name."""
    out = server.cli(
        "serve",
        "--host",
        "127.evil.example",
        "--port",
        "1",
        "--database-url",
        f"sqlite:///{server.db_path.parent / 'other.db'}",
    )
    assert out.returncode == 2, out.stderr
    assert "refusing to listen on 127.evil.example" in " ".join(out.stderr.split())


def test_messages_come_a_page_at_a_time(server: TetherServer) -> None:
    for i in range(5):
        resp = post(server, [(b"x-hermes-session-id", b"paged")], f"turn {i}")
        assert resp.status_code == 200, resp.text
    url = f"{server.url}/v1/conversations/paged/messages"
    seqs, after = [], 0
    while True:
        page = httpx2.get(url, params={"after": after, "limit": 4}, timeout=10).json()
        assert len(page["data"]) <= 4
        seqs += [m["seq"] for m in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["seq"]
    assert seqs == list(range(1, 11))
    whole = httpx2.get(url, timeout=10).json()  # the default page holds these 10
    assert [m["seq"] for m in whole["data"]] == seqs and whole["has_more"] is False
    for bad in ("0", "10001", "-1", "x"):
        resp = httpx2.get(url, params={"limit": bad}, timeout=10)
        assert code(resp) == (400, "invalid_request") and resp.json()["error"]["param"] == "limit"
