"""Scenarios of the reliability matrix (ids as in the team's reliability-matrix notes) against
real processes: `tether serve` and the scripted upstream, nothing mocked.

A2 (one key, k parallel POSTs), A8 (kill -9 during a keyed turn), B1/B2 (two messages to one
conversation at once, reject / enqueue) and D6 (the upstream fault table).

`make test` runs each with a small N (the file takes under a minute); with TETHER_STRESS_ROUNDS
set (`make stress`) each runs the matrix's N: A2 207 trials, A8 50 kills, B1 and B2 1,000
pairs, D6 20 trials of every fault."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.checker import History, Op, check
from tests.support import ScriptedUpstream, TetherServer, free_port

CHAT = "/v1/chat/completions"
STRESS = os.environ.get("TETHER_STRESS_ROUNDS")


def scale(small: int, full: int) -> int:
    """`small` in `make test`; the matrix's `full` N under `make stress`."""
    return full if STRESS else small


# -- helpers -------------------------------------------------------------------------------------


def user(text: str, stream: bool = False) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "stream": stream}


def chat(
    srv: TetherServer,
    text: str,
    cid: str,
    stream: bool = False,
    timeout: float = 30,
    **headers: str,
) -> httpx2.Response:
    return httpx2.post(
        srv.url + CHAT,
        json=user(text, stream),
        headers={"X-Hermes-Session-Id": cid, **headers},
        timeout=timeout,
    )


def data_events(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order (ids and comments dropped)."""
    return [ln[5:].strip() for ln in body.splitlines() if ln.startswith("data:")]


def streamed_text(events: list[str]) -> str:
    text = ""
    for e in events:
        if e == "[DONE]":
            continue
        chunk = json.loads(e)
        for choice in chunk.get("choices") or ():
            text += choice.get("delta", {}).get("content") or ""
    return text


def reply_text(resp: httpx2.Response) -> str:
    if resp.headers["content-type"].startswith("text/event-stream"):
        return streamed_text(data_events(resp.text))
    return str(resp.json()["choices"][0]["message"]["content"])


def check_envelope(error: Any, code: str | set[str]) -> None:
    """The OpenAI error envelope's inner object, with this code (or one of these)."""
    assert isinstance(error, dict), error
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["code"] in ({code} if isinstance(code, str) else code), error


def last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            return str(m.get("content"))
    return ""


def calls(upstream: ScriptedUpstream, text: str) -> int:
    """Upstream requests made for the user message `text`."""
    return sum(1 for b in upstream.chat_bodies() if last_user_text(b) == text)


def turn_rows(srv: TetherServer, cid: str) -> list[tuple[str, str]]:
    """(turn id, status) of a conversation's recorded turns, oldest first."""
    with srv.db() as conn:
        rows = conn.execute(
            "SELECT t.id, t.status FROM turns t JOIN conversations c ON c.pk = t.conversation_pk "
            "WHERE c.id = ? ORDER BY t.started_at, t.rowid",
            (cid,),
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def turn_record(srv: TetherServer, cid: str, turn_id: str) -> dict[str, Any]:
    r = httpx2.get(f"{srv.url}/v1/conversations/{cid}/turns/{turn_id}", timeout=10)
    assert r.status_code == 200, r.text
    record: dict[str, Any] = r.json()
    assert record["id"] == turn_id
    return record


def texts(srv: TetherServer, cid: str) -> list[tuple[str, str]]:
    """(role, content) of the stored transcript."""
    return [(role, json.loads(content)) for _, role, content in srv.transcript(cid)]


def kill_9(srv: TetherServer) -> None:
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None
    srv.logfile.close()


# -- A2: k parallel POSTs with one Idempotency-Key -----------------------------------------------


@dataclass
class A2Stats:
    trials: int = 0
    busy: int = 0
    replayed: int = 0


async def _a2_trial(
    http: httpx2.AsyncClient, cid: str, tag: str, k: int, stream: bool
) -> list[httpx2.Response]:
    """k identical keyed POSTs at once."""
    headers = {"X-Hermes-Session-Id": cid, "Idempotency-Key": f"key-{cid}"}
    return list(
        await asyncio.gather(
            *(http.post(CHAT, json=user(tag, stream), headers=headers) for _ in range(k))
        )
    )


async def test_a2_parallel_posts_with_one_key_execute_once(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """A2: k = 2…10 identical POSTs with the same Idempotency-Key at once (upstream TTFT 0.5 s):
    exactly one upstream call and one turn per trial; every other request gets 409
    idempotency_key_in_use + Retry-After or the replayed body; no 5xx."""
    rounds = scale(2, 23)  # 9 trials a round: 18 (make test) / 207 (make stress)
    stats = A2Stats()
    limits = httpx2.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx2.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        for r in range(rounds):
            stream = r % 2 == 1
            tags = {k: f"[a2 {r}/{k}]" for k in range(2, 11)}
            upstream.queue(*({"delay": 0.5, "match": tag} for tag in tags.values()))
            done = await asyncio.gather(
                *(_a2_trial(http, f"a2-{r}-{k}", tag, k, stream) for k, tag in tags.items())
            )
            for responses, (k, tag) in zip(done, tags.items(), strict=True):
                cid = f"a2-{r}-{k}"
                where = f"trial k={k} {tag} stream={stream}"
                assert [x for x in responses if x.status_code >= 500] == [], where
                fresh = [
                    x
                    for x in responses
                    if x.status_code == 200 and "idempotent-replayed" not in x.headers
                ]
                assert len(fresh) == 1, (where, [x.status_code for x in responses])
                winner = fresh[0]
                assert reply_text(winner) == f"echo: {tag}", where
                for x in responses:
                    if x is winner:
                        continue
                    if x.status_code == 409:
                        check_envelope(x.json()["error"], "idempotency_key_in_use")
                        assert int(x.headers["retry-after"]) >= 1, where
                        stats.busy += 1
                    else:
                        assert x.status_code == 200, (where, x.status_code, x.text)
                        assert x.headers["idempotent-replayed"] == "true", where
                        if stream:
                            assert data_events(x.text) == data_events(winner.text), where
                        else:
                            assert x.json() == winner.json(), where
                        stats.replayed += 1
                assert calls(upstream, tag) == 1, where  # executions = 1
                assert len(turn_rows(server, cid)) == 1, where
                assert texts(server, cid) == [("user", tag), ("assistant", f"echo: {tag}")]
                stats.trials += 1
            # the key is done with its run: one more retry replays the winner's answer
            again = await _a2_trial(http, f"a2-{r}-2", tags[2], 1, stream)
            assert again[0].status_code == 200 and again[0].headers["idempotent-replayed"] == "true"
            assert calls(upstream, tags[2]) == 1
    print(f"A2: {stats}")
    assert stats.trials == rounds * 9
    assert stats.busy + stats.replayed == rounds * sum(k - 1 for k in range(2, 11))


# -- A8: kill -9 during a keyed turn, restart, retry with the key --------------------------------


@dataclass
class Attempt:
    response: httpx2.Response | None = None
    error: str | None = None


def _attempt(srv: TetherServer, text: str, cid: str, key: str, stream: bool) -> Attempt:
    try:
        return Attempt(chat(srv, text, cid, stream, timeout=10, **{"Idempotency-Key": key}))
    except httpx2.TransportError as exc:  # killed under us: indeterminate
        return Attempt(error=repr(exc))


def test_a8_kill_9_during_a_keyed_turn_never_doubles_it(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """A8: kill -9 the server at a random point of a keyed turn (upstream TTFT 1 s; kill at
    0–1.6 s), restart it on the same database, retry with the same key: the retry runs or
    replays at once (the key is never stuck: start-up frees keys a dead process left running);
    exactly one user message and one assistant message for that key; the history checker finds
    nothing lost, doubled or interleaved; no turn is left running."""
    rounds = scale(3, 50)
    srv = TetherServer(tmp_path / "a8.db", upstream.base_url).start()
    rng = random.Random(8)
    history = History()
    cid = "a8-bridge"
    outcomes: dict[str, int] = {"replayed": 0, "ran_again": 0, "indeterminate": 0}
    try:
        for r in range(rounds):
            text, key, stream = f"[a8 {r}]", f"a8-key-{r}", r % 2 == 1
            upstream.queue({"delay": 1.0, "match": text})
            first: list[Attempt] = []
            worker = threading.Thread(
                target=lambda out, args: out.append(_attempt(*args)),
                args=(first, (srv, text, cid, key, stream)),
            )
            worker.start()
            # kill early (before or at the upstream call), while it waits, or around and
            # after the commit, in turn
            time.sleep((r % 3 + rng.random()) * 1.6 / 3)
            kill_9(srv)
            worker.join(timeout=15)
            srv.start()  # the single-server lock died with the process
            retry = _attempt(srv, text, cid, key, stream)
            assert retry.response is not None, retry.error
            assert retry.response.status_code == 200, (r, retry.response.text)  # never 409
            assert reply_text(retry.response) == f"echo: {text}"
            answered = first[0].response if first else None
            if answered is not None and answered.status_code == 200:
                # the first attempt finished before the kill: the retry is its replay
                assert retry.response.headers.get("idempotent-replayed") == "true"
                assert retry.response.headers["x-tether-turn"] == answered.headers["x-tether-turn"]
            if retry.response.headers.get("idempotent-replayed") == "true":
                outcomes["replayed"] += 1
            else:
                outcomes["ran_again"] += 1
            if answered is None:
                outcomes["indeterminate"] += 1
            history.record(Op(cid, text, "ok", key))
            again = _attempt(srv, text, cid, key, stream)  # and from now on it replays
            assert again.response is not None and again.response.status_code == 200
            assert again.response.headers["idempotent-replayed"] == "true"
        transcript = texts(srv, cid)
        with srv.db() as conn:
            statuses = {s for (s,) in conn.execute("SELECT status FROM turns")}
            keys = conn.execute("SELECT key, status FROM idempotency_keys").fetchall()
    finally:
        srv.stop()
    print(f"A8: rounds={rounds} {outcomes}")
    for r in range(rounds):
        text = f"[a8 {r}]"
        assert transcript.count(("user", text)) == 1, (text, transcript)
        assert transcript.count(("assistant", f"echo: {text}")) == 1, (text, transcript)
    assert len(transcript) == 2 * rounds
    assert statuses <= {"completed", "failed", "incomplete"}, statuses  # all terminal
    assert sorted(keys) == sorted((f"a8-key-{r}", "completed") for r in range(rounds))
    report = check(srv.db_path, history)
    assert report.lost == [] and report.duplicated == [], report
    assert report.violations == [], report.violations


# -- B1 / B2: two messages to one conversation at once --------------------------------------------


async def _queue_async(http: httpx2.AsyncClient, upstream: ScriptedUpstream, *items: Any) -> None:
    (await http.post(upstream.url + "/_script/queue", json=list(items))).raise_for_status()


async def test_b1_reject_accepts_exactly_one_of_two_concurrent_messages(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """B1: pairs of different messages sent at once to one conversation with
    `X-Tether-Concurrency: reject` (upstream TTFT 0.2 s): exactly one 2xx per pair, the other
    409 conversation_busy + Retry-After; the transcript holds each accepted message once, no
    rejected one, and no interleaved turns (history checker)."""
    conversations, pairs = scale(4, 8), scale(5, 125)  # 20 / 1,000 pairs
    history = History()
    busy_seen = 0

    async def run(http: httpx2.AsyncClient, c: int) -> None:
        nonlocal busy_seen
        cid = f"b1-{c}"
        headers = {"X-Hermes-Session-Id": cid, "X-Tether-Concurrency": "reject"}
        for p in range(pairs):
            stream = p % 2 == 1
            a, b = f"[b1 {c}/{p} a]", f"[b1 {c}/{p} b]"
            await _queue_async(http, upstream, {"delay": 0.2, "match": f"[b1 {c}/{p} "})
            ra, rb = await asyncio.gather(
                http.post(CHAT, json=user(a, stream), headers=headers),
                http.post(CHAT, json=user(b, stream), headers=headers),
            )
            where = f"{cid} pair {p} stream={stream}: {ra.status_code} {rb.status_code}"
            assert sorted([ra.status_code, rb.status_code]) == [200, 409], where
            for text, resp in ((a, ra), (b, rb)):
                if resp.status_code == 409:
                    check_envelope(resp.json()["error"], "conversation_busy")
                    assert int(resp.headers["retry-after"]) >= 1, where
                    history.record(Op(cid, text, "fail"))
                    busy_seen += 1
                else:
                    assert reply_text(resp) == f"echo: {text}", where
                    if stream:
                        assert data_events(resp.text)[-1] == "[DONE]", where
                    history.record(Op(cid, text, "ok"))

    limits = httpx2.Limits(max_connections=100, max_keepalive_connections=50)
    async with httpx2.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(run(http, c) for c in range(conversations)))
    report = check(server.db_path, history)
    print(f"B1: pairs={conversations * pairs} accepted={report.acknowledged} busy={busy_seen}")
    assert report.acknowledged == busy_seen == conversations * pairs
    assert report.lost == [] and report.duplicated == [], report
    assert report.failed_present == [], report.failed_present  # a 409 left nothing behind
    assert report.violations == [], report.violations  # gapless, contiguous turns
    for c in range(conversations):
        assert len(turn_rows(server, f"b1-{c}")) == pairs


def upstream_bodies(upstream: ScriptedUpstream) -> dict[str, list[dict[str, Any]]]:
    """The upstream's request bodies by their last user message."""
    out: dict[str, list[dict[str, Any]]] = {}
    for b in upstream.chat_bodies():
        out.setdefault(last_user_text(b), []).append(b)
    return out


def _check_pairs(
    srv: TetherServer,
    bodies: dict[str, list[dict[str, Any]]],
    cid: str,
    pairs: list[tuple[str, str]],
) -> None:
    """Each (first, second) ran as two turns, in that order, in the pair's slot of the
    transcript, neither merged into the other nor into another pair."""
    assert texts(srv, cid) == [
        x
        for first, second in pairs
        for x in (
            ("user", first),
            ("assistant", f"echo: {first}"),
            ("user", second),
            ("assistant", f"echo: {second}"),
        )
    ]
    assert len(turn_rows(srv, cid)) == 2 * len(pairs)
    for first, second in pairs:
        assert len(bodies[first]) == len(bodies[second]) == 1, (first, second)  # one call each
        # the second turn's model saw the first turn committed: not merged, not run in parallel
        assert bodies[second][0]["messages"][-3:] == [
            {"role": "user", "content": first},
            {"role": "assistant", "content": f"echo: {first}"},
            {"role": "user", "content": second},
        ]


async def test_b2_enqueue_runs_both_messages_in_arrival_order(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """B2 (enqueue, the default), in arrival order: the second message is sent once the first is
    known to be accepted (its stream started): both get 200, as two separate turns, the second
    after the first, and no user message is merged with another."""
    conversations, pairs = scale(4, 8), scale(3, 125)
    limits = httpx2.Limits(max_connections=100, max_keepalive_connections=50)

    async def run(http: httpx2.AsyncClient, c: int) -> None:
        cid = f"b2-order-{c}"
        headers = {"X-Hermes-Session-Id": cid}
        for p in range(pairs):
            a, b = f"[b2 {c}/{p} a]", f"[b2 {c}/{p} b]"
            # the first streams slowly (~0.4 s) so that it is still running when the second comes
            await _queue_async(http, upstream, {"chunk_delay": 0.05, "chunk_size": 3, "match": a})
            async with http.stream("POST", CHAT, json=user(a, True), headers=headers) as ra:
                assert ra.status_code == 200  # headers at its first token: a is running
                second = asyncio.create_task(http.post(CHAT, json=user(b), headers=headers))
                body_a = (await ra.aread()).decode()
            rb = await second
            where = f"{cid} pair {p}"
            assert streamed_text(data_events(body_a)) == f"echo: {a}", where
            assert data_events(body_a)[-1] == "[DONE]", where
            assert rb.status_code == 200, (where, rb.text)
            assert reply_text(rb) == f"echo: {b}", where
            assert rb.headers["x-tether-turn"] != ra.headers["x-tether-turn"], where
            assert rb.headers["etag"] == f'"v{4 * (p + 1)}"', where  # b committed after a

    async with httpx2.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(run(http, c) for c in range(conversations)))
    bodies = upstream_bodies(upstream)
    for c in range(conversations):
        order = [(f"[b2 {c}/{p} a]", f"[b2 {c}/{p} b]") for p in range(pairs)]
        _check_pairs(server, bodies, f"b2-order-{c}", order)


async def test_b2_enqueue_runs_two_simultaneous_messages_as_two_turns(
    server: TetherServer, upstream: ScriptedUpstream
) -> None:
    """B2 (enqueue), both sent at the same instant (upstream TTFT 0.2 s): both get 200, as two
    separate turns, never merged; the version each client is told its turn committed at is
    where the transcript has its message (order = the order the server accepted them)."""
    conversations, pairs = scale(4, 8), scale(3, 125)
    accepted: dict[str, list[tuple[str, str]]] = {}
    limits = httpx2.Limits(max_connections=100, max_keepalive_connections=50)

    async def run(http: httpx2.AsyncClient, c: int) -> None:
        cid = f"b2-once-{c}"
        headers = {"X-Hermes-Session-Id": cid}
        for p in range(pairs):
            a, b = f"[b2 {c}/{p} a]", f"[b2 {c}/{p} b]"
            await _queue_async(
                http, upstream, {"delay": 0.2, "match": a}, {"delay": 0.2, "match": b}
            )
            ra, rb = await asyncio.gather(
                http.post(CHAT, json=user(a), headers=headers),
                http.post(CHAT, json=user(b), headers=headers),
            )
            where = f"{cid} pair {p}"
            assert (ra.status_code, rb.status_code) == (200, 200), (where, ra.text, rb.text)
            assert reply_text(ra) == f"echo: {a}" and reply_text(rb) == f"echo: {b}", where
            version = {text: int(x.headers["etag"].strip('"v')) for text, x in ((a, ra), (b, rb))}
            assert sorted(version.values()) == [4 * p + 2, 4 * p + 4], (where, version)
            first, second = sorted(version, key=version.__getitem__)
            accepted.setdefault(cid, []).append((first, second))

    async with httpx2.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(run(http, c) for c in range(conversations)))
    assert sum(len(v) for v in accepted.values()) == conversations * pairs
    bodies = upstream_bodies(upstream)
    for cid, order in accepted.items():
        _check_pairs(server, bodies, cid, order)


# -- D6: the upstream fault table -----------------------------------------------------------------

READ_TIMEOUT = 1.0  # TETHER_UPSTREAM_TIMEOUT of the D6 server
DEADLINE = 3.0  # TETHER_MAX_TURN_SECONDS of the D6 server
RETRIES = 2
REPLY = "alpha bravo charlie delta echo foxtrot golf hotel"
TRIALS = scale(1, 20)


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    srv = TetherServer(
        tmp_path_factory.mktemp("d6") / "d6.db",
        scripted.base_url,
        TETHER_UPSTREAM_RETRIES=str(RETRIES),
        TETHER_UPSTREAM_BACKOFF="0.05",
        TETHER_UPSTREAM_TIMEOUT=str(READ_TIMEOUT),
        TETHER_MAX_TURN_SECONDS=str(DEADLINE),
    ).start()
    yield srv
    srv.stop()


@dataclass(frozen=True)
class Before:
    """A fault before the first token: the client gets a plain HTTP answer."""

    items: list[dict[str, Any]]
    status: int  # what the client gets
    code: str | None  # the error code (None: 200)
    calls: int  # upstream requests Tether makes (retries are bounded)
    min_seconds: float = 0.0  # e.g. Retry-After honoured
    codes: set[str] = field(default_factory=set)  # other acceptable codes


_OK = {"content": REPLY}
BEFORE: dict[str, dict[bool, Before]] = {
    "429-then-ok": {
        s: Before([{"status": 429, "retry_after": "1"}, _OK], 200, None, 2, 1.0)
        for s in (False, True)
    },
    "429-exhausted": {
        s: Before([{"status": 429, "retry_after": "0"}] * 3, 429, "upstream_rate_limited", 3)
        for s in (False, True)
    },
    # Retry-After 2 s twice: the turn's deadline (3 s) ends the retrying
    "429-past-deadline": {
        s: Before(
            [{"status": 429, "retry_after": "2"}] * 3,
            504,
            "turn_deadline_exceeded",
            2,
            DEADLINE - 0.1,
        )
        for s in (False, True)
    },
    "500-then-ok": {s: Before([{"status": 500}, _OK], 200, None, 2) for s in (False, True)},
    "500-exhausted": {
        s: Before([{"status": 500}] * 3, 502, "upstream_error", 3) for s in (False, True)
    },
    "reset-then-ok": {s: Before([{"fault": "reset"}, _OK], 200, None, 2) for s in (False, True)},
    "reset-exhausted": {
        s: Before([{"fault": "reset"}] * 3, 502, "upstream_unreachable", 3) for s in (False, True)
    },
    # a read stall is not retried: the upstream may be working on it
    "stall-before-headers": {
        s: Before([{"delay": READ_TIMEOUT + 1.5}], 504, "upstream_timeout", 1)
        for s in (False, True)
    },
    "stall-after-headers": {
        s: Before([{"fault": "stall", "stall": READ_TIMEOUT + 1.5}], 504, "upstream_timeout", 1)
        for s in (False, True)
    },
    "truncated": {
        # a stream that ends at once, without a chunk or [DONE]
        True: Before([{"fault": "truncate"}, _OK], 502, "upstream_stream_interrupted", 1),
        # a JSON body cut short is a broken connection before any token: retried
        False: Before([{"fault": "truncate"}, _OK], 200, None, 2),
    },
    "malformed": {
        s: Before([{"fault": "malformed"}, _OK], 502, "upstream_bad_response", 1)
        for s in (False, True)
    },
    "junk-10MiB": {
        s: Before(
            [{"fault": "junk"}, _OK],
            502,
            "upstream_bad_response",
            1,
            codes={"upstream_stream_interrupted"},
        )
        for s in (False, True)
    },
}


def _good_turn(srv: TetherServer, cid: str) -> None:
    """A conversation must exist for its failed turns to be recorded."""
    r = chat(srv, "hello", cid)
    assert r.status_code == 200, r.text


def _newest_turn(srv: TetherServer, cid: str) -> str:
    rows = turn_rows(srv, cid)
    assert rows, f"no turn recorded for {cid}"
    return rows[-1][0]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("fault", list(BEFORE))
def test_d6_fault_before_the_first_token(
    faulty: TetherServer, upstream: ScriptedUpstream, fault: str, stream: bool
) -> None:
    """D6, faults before the first token (429 + Retry-After, 500, reset, read stall before and
    after the headers, truncated, malformed, 10 MiB of junk), JSON and streaming: retried only
    where retryable and at most TETHER_UPSTREAM_RETRIES times (counted at the upstream); the
    client gets one plain HTTP answer — the reply exactly once, or an OpenAI error envelope —
    within the deadline + 2 s; the turn is recorded completed or failed; a failure stores
    nothing."""
    case = BEFORE[fault][stream]
    for trial in range(TRIALS):
        cid = f"d6-before-{fault}-{stream}-{trial}"
        text = f"[d6 {fault} {stream} {trial}]"
        _good_turn(faulty, cid)
        upstream.queue(*({**item, "match": text} for item in case.items))
        started = time.monotonic()
        r = chat(faulty, text, cid, stream)
        elapsed = time.monotonic() - started
        assert elapsed < DEADLINE + 2, elapsed  # nothing hangs
        assert elapsed >= case.min_seconds, elapsed
        assert calls(upstream, text) == case.calls
        assert r.status_code == case.status, r.text[:500]
        if case.code is None:
            assert reply_text(r) == REPLY  # once: a retried attempt left nothing in it
            if stream:
                events = data_events(r.text)
                assert events[-1] == "[DONE]"
                chunks = [json.loads(e) for e in events[:-1]]
                assert all("error" not in c for c in chunks)
                assert len({c["id"] for c in chunks}) == 1  # one upstream completion
            assert texts(faulty, cid)[-2:] == [("user", text), ("assistant", REPLY)]
            status = turn_record(faulty, cid, r.headers["x-tether-turn"])["status"]
            assert status == "completed"
            continue
        assert r.headers["content-type"].startswith("application/json")  # even for a stream
        check_envelope(r.json()["error"], {case.code, *case.codes})
        if case.status == 429:
            assert int(r.headers["retry-after"]) >= 1
        assert texts(faulty, cid) == [("user", "hello"), ("assistant", "echo: hello")]
        record = turn_record(faulty, cid, _newest_turn(faulty, cid))
        assert record["status"] == "failed", record
        check_envelope(record["error"], {case.code, *case.codes})


@dataclass(frozen=True)
class Midway:
    """A fault after the first token (streams): an error event ends the stream."""

    item: dict[str, Any]
    code: str | set[str]
    partial: str | None  # the text the client saw (None: some prefix)
    max_seconds: float = DEADLINE + 2


_CUT = {"content": REPLY, "chunk_size": 6, "chunk_delay": 0.02}
MIDWAY: dict[str, Midway] = {
    "reset": Midway(
        {**_CUT, "fault": "reset", "fault_after_chunks": 3},
        "upstream_stream_interrupted",
        REPLY[:18],
    ),
    "disconnect": Midway(
        {**_CUT, "fail_after_chunks": 3}, "upstream_stream_interrupted", REPLY[:18]
    ),
    "truncated": Midway(
        {**_CUT, "fault": "truncate", "fault_after_chunks": 3},
        "upstream_stream_interrupted",
        REPLY[:18],
    ),
    "truncated-after-last-chunk": Midway(  # all the text, no final chunk, no [DONE]
        {**_CUT, "fault": "truncate", "fault_after_chunks": 99},
        "upstream_stream_interrupted",
        REPLY,
    ),
    "malformed": Midway(
        {**_CUT, "fault": "malformed", "fault_after_chunks": 3}, "upstream_bad_response", REPLY[:18]
    ),
    "junk-10MiB": Midway(
        {**_CUT, "fault": "junk", "fault_after_chunks": 3},
        {"upstream_stream_interrupted", "upstream_bad_response"},
        REPLY[:18],
    ),
    "read-stall": Midway(
        {**_CUT, "fault": "stall", "stall": READ_TIMEOUT + 2, "fault_after_chunks": 3},
        "upstream_timeout",
        REPLY[:18],
        READ_TIMEOUT + 2,
    ),
    "turn-deadline": Midway(  # a slow drip: every read in time, the turn too long
        {**_CUT, "chunk_size": 2, "chunk_delay": 0.3}, "turn_deadline_exceeded", None
    ),
}


@pytest.mark.parametrize("fault", list(MIDWAY))
def test_d6_fault_after_the_first_token(
    faulty: TetherServer, upstream: ScriptedUpstream, fault: str
) -> None:
    """D6, faults after the first token of a stream (connection reset, a cut without RST,
    truncated SSE, malformed chunk, 10 MiB of junk, read stall, the turn's deadline): never
    retried (1 upstream call); the stream carries the partial text once, then ends with an
    OpenAI-shaped error event (`data: {"error": {...}}`, no [DONE]) within the deadline + 2 s;
    the partial text is never stored; the turn is recorded `incomplete`; the client's retry
    gets a whole answer and the partial text appears nowhere."""
    case = MIDWAY[fault]
    for trial in range(TRIALS):
        cid = f"d6-midway-{fault}-{trial}"
        text = f"[d6 midway {fault} {trial}]"
        _good_turn(faulty, cid)
        upstream.queue({**case.item, "match": text})
        started = time.monotonic()
        r = chat(faulty, text, cid, stream=True)
        elapsed = time.monotonic() - started
        assert elapsed < case.max_seconds, elapsed  # nothing hangs
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = data_events(r.text)
        assert "[DONE]" not in events
        last = json.loads(events[-1])
        assert set(last) == {"error"}, last
        check_envelope(last["error"], case.code)
        chunks = [json.loads(e) for e in events[:-1]]
        assert all("error" not in c for c in chunks)
        seen = streamed_text(events[:-1])
        if case.partial is not None:
            assert seen == case.partial  # exactly once: nothing repeated
        else:
            assert seen and REPLY.startswith(seen) and seen != REPLY
        assert calls(upstream, text) == 1  # no retry after the first token
        assert texts(faulty, cid) == [("user", "hello"), ("assistant", "echo: hello")]
        record = turn_record(faulty, cid, r.headers["x-tether-turn"])
        assert record["status"] == "incomplete", record
        check_envelope(record["error"], case.code)
        # the client retries: a whole answer, stored once, and the partial text nowhere
        again = chat(faulty, text, cid, stream=True)
        assert again.status_code == 200 and reply_text(again) == f"echo: {text}"
        assert texts(faulty, cid) == [
            ("user", "hello"),
            ("assistant", "echo: hello"),
            ("user", text),
            ("assistant", f"echo: {text}"),
        ]
        retried = [b for b in upstream.chat_bodies() if last_user_text(b) == text][-1]
        assert all(seen not in json.dumps(m) for m in retried["messages"][:-1])


@contextmanager
def blackhole() -> Iterator[str]:
    """A loopback address where connecting hangs: a listening socket that never accepts,
    its accept queue full, so the kernel drops further SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):  # the first fills the queue (listen(0) holds one), the second stays stuck
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


def _retry_lines(srv: TetherServer) -> int:
    return srv.output().count("upstream.retry")


def test_d6_upstream_unreachable(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    """D6, an unreachable upstream, JSON and streaming: connection refused (nothing listens at
    its port) and connect timeout (it never accepts). Retried TETHER_UPSTREAM_RETRIES times with
    backoff (counted in the server's log), then 502 upstream_unreachable / 504 upstream_timeout
    as plain JSON (also for a stream), well within the deadline; the turn is recorded failed;
    nothing is stored."""
    db = tmp_path / "unreachable.db"
    good = TetherServer(db, upstream.base_url).start()
    try:
        _good_turn(good, "unreachable-1")
    finally:
        good.stop()
    settings = {
        "TETHER_UPSTREAM_RETRIES": str(RETRIES),
        "TETHER_UPSTREAM_BACKOFF": "0.2",
        "TETHER_UPSTREAM_CONNECT_TIMEOUT": "0.5",
        "TETHER_MAX_TURN_SECONDS": str(DEADLINE),
    }
    with blackhole() as stuck:
        for kind, url, status, code, least in (
            ("refused", f"http://127.0.0.1:{free_port()}/v1", 502, "upstream_unreachable", 0.6),
            # three connect timeouts and the two backoffs between them
            ("connect-timeout", stuck, 504, "upstream_timeout", 3 * 0.5 + 0.6),
        ):
            srv = TetherServer(db, url, **settings).start()
            try:
                for trial in range(TRIALS):
                    for stream in (False, True):
                        where = f"{kind} stream={stream}"
                        retries_before = _retry_lines(srv)
                        started = time.monotonic()
                        r = chat(
                            srv, f"anyone there? {kind} {trial} {stream}", "unreachable-1", stream
                        )
                        elapsed = time.monotonic() - started
                        assert r.status_code == status, (where, r.text)
                        assert r.headers["content-type"].startswith("application/json")
                        check_envelope(r.json()["error"], code)
                        assert least <= elapsed < DEADLINE + 2, (where, elapsed)
                        wait = time.monotonic() + 5  # the log line may trail the response
                        while _retry_lines(srv) < retries_before + RETRIES:
                            assert time.monotonic() < wait, srv.output()[-2000:]
                            time.sleep(0.05)
                        assert _retry_lines(srv) == retries_before + RETRIES, where
                        turn_id = _newest_turn(srv, "unreachable-1")
                        record = turn_record(srv, "unreachable-1", turn_id)
                        assert record["status"] == "failed", (where, record)
                        check_envelope(record["error"], code)
                assert texts(srv, "unreachable-1") == [
                    ("user", "hello"),
                    ("assistant", "echo: hello"),
                ]
            finally:
                srv.stop()
