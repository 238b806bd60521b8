"""Turns as records: resume by Last-Event-ID, cancel, disconnect policy, crash marking,
graceful shutdown and frozen clients (reliability matrix B7, D2, D4, D5)."""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from tests.support import ScriptedUpstream, TetherServer

CHAT = "/v1/chat/completions"
STRESS = bool(int(os.environ.get("TETHER_STRESS_ROUNDS", "0")))  # make stress: the large N
TEXT = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "scripted", "messages": [{"role": "user", "content": text}], **extra}


Event = tuple[int | None, bytes]


def events(lines: Iterator[str]) -> Iterator[Event]:
    """SSE events as (id, data); comments are skipped."""
    event_id: int | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event_id, "\n".join(data).encode()
            event_id, data = None, []
        elif line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def text_of(evs: list[Event]) -> str:
    out = []
    for _, data in evs:
        if data == b"[DONE]":
            continue
        chunk = orjson.loads(data)
        for choice in chunk.get("choices") or []:
            out.append(choice.get("delta", {}).get("content") or "")
    return "".join(out)


def turn_url(server: TetherServer, cid: str, turn_id: str, tail: str = "") -> str:
    return f"{server.url}/v1/conversations/{cid}/turns/{turn_id}{tail}"


def stored_reply(server: TetherServer, cid: str) -> str:
    rows = server.transcript(cid)
    return str(orjson.loads(rows[-1][2])) if rows else ""


def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_resume_after_random_cuts_gives_every_event_once(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """D2: cut the stream after a random number of events, resume with Last-Event-ID (while the
    turn runs, or after it finished): the concatenation is the stored text, ids have no gap
    and no duplicate."""
    rng = random.Random(7)
    for trial in range(100 if STRESS else 8):
        cid = f"resume-{trial}"
        upstream.queue({"content": TEXT, "chunk_delay": rng.choice([0.0, 0.03])})
        with httpx2.stream(
            "POST",
            server.url + CHAT,
            json=body("go", stream=True),
            headers={"X-Hermes-Session-Id": cid},
        ) as r:
            assert r.status_code == 200
            turn_id = r.headers["x-tether-turn"]
            cut = rng.randint(1, 12)
            first: list[Event] = []
            for ev in events(r.iter_lines()):
                first.append(ev)
                if len(first) == cut:
                    break
        last_id = first[-1][0]
        assert last_id is not None
        with httpx2.stream(
            "GET",
            turn_url(server, cid, turn_id, "/events"),
            headers={"Last-Event-ID": str(last_id)},
        ) as r:
            assert r.status_code == 200, r.read()
            rest = list(events(r.iter_lines()))
        ids = [i for i, _ in first + rest]
        assert ids == list(range(1, len(ids) + 1)), ids
        assert rest[-1][1] == b"[DONE]"
        wait_for(lambda cid=cid: len(server.transcript(cid)) == 2)  # type: ignore[misc]
        assert text_of(first + rest) == stored_reply(server, cid) == TEXT


def test_a_finished_stream_replays_whole_from_its_buffer(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """D2: without Last-Event-ID the events endpoint gives the whole stream, byte for byte."""
    upstream.queue({"content": TEXT})
    with httpx2.stream(
        "POST",
        server.url + CHAT,
        json=body("hi", stream=True),
        headers={"X-Tether-Conversation": "whole-1"},
    ) as r:
        turn_id = r.headers["x-tether-turn"]
        original = list(events(r.iter_lines()))
    with httpx2.stream("GET", turn_url(server, "whole-1", turn_id, "/events")) as r:
        again = list(events(r.iter_lines()))
    assert again == original
    assert text_of(original) == TEXT

    bad = httpx2.get(
        turn_url(server, "whole-1", turn_id, "/events"), headers={"Last-Event-ID": "x"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "last-event-id"
    unknown = httpx2.get(turn_url(server, "whole-1", "turn_nope", "/events"))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "turn_not_found"


def test_turn_record_shows_its_result(server: TetherServer, upstream: ScriptedUpstream) -> None:
    r = httpx2.post(
        server.url + CHAT, json=body("what"), headers={"X-Tether-Conversation": "rec-1"}
    )
    turn = httpx2.get(turn_url(server, "rec-1", r.headers["x-tether-turn"])).json()
    assert turn["status"] == "completed"
    assert [(m["seq"], m["role"], m["content"]) for m in turn["messages"]] == [
        (1, "user", "what"),
        (2, "assistant", "echo: what"),
    ]


def _read_stream(
    server: TetherServer, cid: str, got: dict[str, Any], started: threading.Event
) -> None:
    with httpx2.stream(
        "POST",
        server.url + CHAT,
        json=body("race", stream=True),
        headers={"X-Hermes-Session-Id": cid},
        timeout=30,
    ) as r:
        got["status"] = r.status_code
        got["turn"] = r.headers.get("x-tether-turn")
        started.set()
        got["events"] = list(events(r.iter_lines()))


def test_cancel_racing_completion_ends_each_turn_once(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """B7: cancel at random offsets during and after a streamed turn: exactly one terminal
    state, matching the transcript and the stream's end; a late cancel is a no-op."""
    rng = random.Random(11)
    cid = "cancel-race"
    httpx2.post(server.url + CHAT, json=body("start"), headers={"X-Hermes-Session-Id": cid})
    outcomes = {"completed": 0, "cancelled": 0}
    for _ in range(200 if STRESS else 16):
        before = len(server.transcript(cid))
        upstream.queue({"content": "one two three four five six", "chunk_delay": 0.04})
        got: dict[str, Any] = {}
        started = threading.Event()
        reader = threading.Thread(target=_read_stream, args=(server, cid, got, started))
        reader.start()
        assert started.wait(10)
        time.sleep(rng.uniform(0, 0.5))
        cancel = httpx2.post(turn_url(server, cid, got["turn"], "/cancel"), timeout=30)
        assert cancel.status_code == 200, cancel.text
        status = cancel.json()["status"]
        reader.join(30)
        assert status in outcomes
        outcomes[status] += 1
        again = httpx2.post(turn_url(server, cid, got["turn"], "/cancel"), timeout=30)
        assert again.json()["status"] == status  # a no-op on a finished turn
        assert httpx2.get(turn_url(server, cid, got["turn"])).json()["status"] == status
        last = got["events"][-1][1]
        if status == "completed":
            assert last == b"[DONE]"
            assert len(server.transcript(cid)) == before + 2
        else:
            assert orjson.loads(last)["error"]["code"] == "turn_cancelled"
            assert len(server.transcript(cid)) == before
    assert outcomes["completed"] and outcomes["cancelled"], outcomes  # both sides were raced


@pytest.fixture
def cancelling(tmp_path: Path, upstream: ScriptedUpstream) -> Iterator[TetherServer]:
    srv = TetherServer(tmp_path / "t.db", upstream.base_url, TETHER_ON_DISCONNECT="cancel")
    yield srv.start()
    srv.stop()


def test_disconnect_policy_cancel_stops_the_turn(
    cancelling: TetherServer, upstream: ScriptedUpstream
) -> None:
    """TETHER_ON_DISCONNECT=cancel: a client that hangs up mid-stream cancels its turn."""
    srv = cancelling
    httpx2.post(srv.url + CHAT, json=body("one"), headers={"X-Hermes-Session-Id": "dc-1"})
    upstream.queue({"content": TEXT, "chunk_size": 2, "chunk_delay": 0.1})
    with httpx2.stream(
        "POST",
        srv.url + CHAT,
        json=body("two", stream=True),
        headers={"X-Hermes-Session-Id": "dc-1"},
    ) as r:
        turn_id = r.headers["x-tether-turn"]
        next(events(r.iter_lines()))
    url = turn_url(srv, "dc-1", turn_id)
    wait_for(lambda: httpx2.get(url).json()["status"] != "running")
    assert httpx2.get(url).json()["status"] == "cancelled"
    time.sleep(0.5)
    assert len(srv.transcript("dc-1")) == 2  # only the first turn


def test_a_turn_running_at_a_crash_is_marked_incomplete(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """C1/D: a running turn is a record; kill -9 leaves it running, start-up marks it
    incomplete, and the conversation goes on."""
    srv = TetherServer(tmp_path / "t.db", upstream.base_url).start()
    try:
        httpx2.post(srv.url + CHAT, json=body("one"), headers={"X-Hermes-Session-Id": "crash-1"})
        upstream.queue({"content": TEXT, "chunk_size": 2, "chunk_delay": 0.2})
        with httpx2.stream(
            "POST",
            srv.url + CHAT,
            json=body("two", stream=True),
            headers={"X-Hermes-Session-Id": "crash-1"},
        ) as r:
            turn_id = r.headers["x-tether-turn"]
            next(events(r.iter_lines()))
            assert httpx2.get(turn_url(srv, "crash-1", turn_id)).json()["status"] == "running"
            assert srv.proc is not None
            srv.proc.kill()
            srv.proc.wait()
        srv.stop()
        srv.start()
        turn = httpx2.get(turn_url(srv, "crash-1", turn_id)).json()
        assert turn["status"] == "incomplete"
        assert turn["error"]["code"] == "server_restarted"
        assert len(srv.transcript("crash-1")) == 2
        r2 = httpx2.post(
            srv.url + CHAT, json=body("three"), headers={"X-Hermes-Session-Id": "crash-1"}
        )
        assert r2.status_code == 200
        assert [c for _, _, c in srv.transcript("crash-1")][-2:] == ['"three"', '"echo: three"']
    finally:
        srv.stop()


def _stream_into(server: TetherServer, cid: str, out: list[list[Event]]) -> None:
    with httpx2.stream(
        "POST",
        server.url + CHAT,
        json=body("long", stream=True),
        headers={"X-Hermes-Session-Id": cid},
        timeout=60,
    ) as r:
        assert r.status_code == 200
        out.append(list(events(r.iter_lines())))


def _sigterm_with_streams(
    tmp_path: Path, upstream: ScriptedUpstream, grace: str, chunk_delay: float, n: int
) -> tuple[TetherServer, list[list[Event]], float]:
    srv = TetherServer(tmp_path / "t.db", upstream.base_url, TETHER_SHUTDOWN_GRACE_SECONDS=grace)
    srv.start()
    for i in range(n):
        httpx2.post(srv.url + CHAT, json=body("hi"), headers={"X-Hermes-Session-Id": f"st-{i}"})
    upstream.queue(*[{"content": TEXT, "chunk_size": 3, "chunk_delay": chunk_delay}] * n)
    out: list[list[Event]] = []
    threads = [threading.Thread(target=_stream_into, args=(srv, f"st-{i}", out)) for i in range(n)]
    for t in threads:
        t.start()
    wait_for(lambda: len(upstream.chat_bodies()) == 2 * n)
    time.sleep(0.3)  # every stream has its first events
    assert srv.proc is not None
    signalled = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    refused = httpx2.post(
        srv.url + CHAT, json=body("late"), headers={"X-Hermes-Session-Id": "st-0"}
    )
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_shutting_down"
    assert int(refused.headers["retry-after"]) > 0
    assert httpx2.get(srv.url + "/health").status_code == 503
    assert srv.proc.wait(timeout=60) == 0
    took = time.monotonic() - signalled
    for t in threads:
        t.join(10)
    srv.stop()
    return srv, out, took


def test_sigterm_lets_live_streams_finish_then_exits_0(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """D5: with streams running, SIGTERM refuses new turns (503 + Retry-After), every stream
    finishes with [DONE], every turn is stored, the process exits 0."""
    n = 20 if STRESS else 6
    srv, out, took = _sigterm_with_streams(tmp_path, upstream, "20", 0.1, n)
    assert len(out) == n
    assert all(evs[-1][1] == b"[DONE]" and text_of(evs) == TEXT for evs in out)
    assert took < 20
    for i in range(n):
        assert [c for _, _, c in srv.transcript(f"st-{i}")][-1] == orjson.dumps(TEXT).decode()
    with srv.db() as db:
        assert db.execute("SELECT count(*) FROM turns WHERE status != 'completed'").fetchone() == (
            0,
        )


def test_sigterm_past_the_grace_stops_turns_as_incomplete(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """D5: streams longer than the grace period end with an error event, their turns are
    recorded incomplete (nothing stored), none is left running, exit 0 soon after the grace."""
    n = 3
    srv, out, took = _sigterm_with_streams(tmp_path, upstream, "1", 0.5, n)
    assert len(out) == n
    for evs in out:
        assert orjson.loads(evs[-1][1])["error"]["code"] == "server_shutting_down"
    assert took < 1 + 8
    with srv.db() as db:
        statuses = db.execute("SELECT status, count(*) FROM turns GROUP BY status").fetchall()
    assert dict(statuses) == {"completed": n, "incomplete": n}
    for i in range(n):
        assert len(srv.transcript(f"st-{i}")) == 2


def test_a_frozen_client_is_closed_and_its_turn_still_completes(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """D4: clients that stop reading a large stream are disconnected after the send timeout
    (the server stops writing and drops the connection); their turns complete and are
    stored."""
    srv = TetherServer(
        tmp_path / "t.db",
        upstream.base_url,
        TETHER_STREAM_SEND_TIMEOUT="1",
        TETHER_RESUME_BUFFER_BYTES=str(4 * 1024 * 1024),
    ).start()
    assert srv.proc is not None
    n = 2
    size = 8 * 1024 * 1024
    try:
        for i in range(n):
            httpx2.post(srv.url + CHAT, json=body("hi"), headers={"X-Hermes-Session-Id": f"fz-{i}"})
        usage = {"prompt_tokens": 10, "completion_tokens": size // 8, "total_tokens": size // 8}
        item = {"content": "xxxxxxx " * (size // 8), "chunk_size": 65536, "usage": usage}
        upstream.queue(*[item] * n)
        socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            payload = orjson.dumps(body("big", stream=True))
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                + f"X-Hermes-Session-Id: fz-{i}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            socks.append(s)
        # the turns finish and are stored although nobody reads them
        for i in range(n):
            wait_for(lambda i=i: len(srv.transcript(f"fz-{i}")) == 4, timeout=60)  # type: ignore[misc]
        time.sleep(1 + 1)  # the send timeout, and a second
        for s in socks:
            # the server dropped the connection: the client gets what the kernel already held
            # for it, far short of the stream, then the end of the connection
            s.settimeout(5)
            received = 0
            tail = b""
            while chunk := s.recv(1 << 20):  # a timeout here: the connection was left open
                received += len(chunk)
                tail = (tail + chunk)[-64:]
            s.close()
            assert received < size * 3 / 4, received
            assert b"[DONE]" not in tail
        assert srv.output().count("stream.client_stalled") == n
    finally:
        srv.stop()
