"""End to end, at the edges: upstream retries, tool calls, CORS, the CLI (bind guard, config
precedence, keys, help) and /health. Every test drives real `tether serve` processes and the
scripted upstream process; nothing is mocked."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.support import ScriptedUpstream, TetherServer, free_port, stop
from tether.testing.processes import wait_ready

MAIN_SETTINGS_ENV = (
    "TETHER_HOST",
    "TETHER_PORT",
    "TETHER_DATABASE_URL",
    "TETHER_UPSTREAM_BASE_URL",
    "TETHER_UPSTREAM_API_KEY",
    "TETHER_DEFAULT_MODEL",
)


def client(server: TetherServer, key: str = "none", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, default_headers=headers, max_retries=0
    )


Clients = Callable[..., openai.OpenAI]


@pytest.fixture
def clients() -> Iterator[Clients]:
    """`client(...)` whose clients are all closed after the test, pass or fail."""
    made: list[openai.OpenAI] = []

    def make(server: TetherServer, key: str = "none", **headers: str) -> openai.OpenAI:
        made.append(client(server, key, **headers))
        return made[-1]

    yield make
    for c in made:
        c.close()


def chat(
    server: TetherServer, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx2.Response:
    return httpx2.post(
        f"{server.url}/v1/chat/completions", json=body, headers=headers or {}, timeout=30
    )


def error_code(resp: httpx2.Response) -> str:
    err = resp.json()["error"]
    assert isinstance(err, dict) and err["message"], resp.text
    return str(err["code"])


def sse_events(text: str) -> list[str]:
    return [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]


def words(text: str) -> str:
    """Whitespace-normalised text (rich wraps console output at the terminal width)."""
    return " ".join(text.split())


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without any TETHER_* setting (and without the local model), plus
    `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["TETHER_LOCAL_MODEL"] = "off"
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def turns_of(srv: TetherServer, conversation_id: str) -> list[tuple[Any, ...]]:
    with srv.db() as conn:
        return conn.execute(
            "SELECT t.status, t.stream, t.first_seq, t.last_seq FROM turns t JOIN conversations c "
            "ON c.pk = t.conversation_pk WHERE c.id = ? ORDER BY t.started_at",
            (conversation_id,),
        ).fetchall()


# -- 1, 2: retries before the first token -------------------------------------------------------


@pytest.fixture(scope="module")
def retrying(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    srv = TetherServer(
        tmp_path_factory.mktemp("retry") / "retry.db",
        scripted.base_url,
        TETHER_UPSTREAM_RETRIES="2",
        TETHER_UPSTREAM_BACKOFF="0.05",
    ).start()
    yield srv
    srv.stop()


def test_retries_500_then_429_honouring_retry_after(
    retrying: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"status": 500}, {"status": 429, "retry_after": "1"}, {"content": "third time"})
    started = time.monotonic()
    resp = chat(
        retrying,
        {"messages": [{"role": "user", "content": "please answer"}]},
        {"X-Hermes-Session-Id": "retry-json-1"},
    )
    elapsed = time.monotonic() - started
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "third time"
    bodies = upstream.chat_bodies()
    assert len(bodies) == 3
    assert all(b["messages"] == [{"role": "user", "content": "please answer"}] for b in bodies)
    assert elapsed >= 1.0, f"Retry-After: 1 was not honoured ({elapsed:.3f}s)"
    assert elapsed < 10
    assert [(r, c) for _, r, c in retrying.transcript("retry-json-1")] == [
        ("user", '"please answer"'),
        ("assistant", '"third time"'),
    ]
    assert turns_of(retrying, "retry-json-1") == [("completed", 0, 1, 2)]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_retries_exhausted_is_502_after_three_attempts(
    retrying: TetherServer, upstream: ScriptedUpstream, stream: bool
) -> None:
    upstream.queue({"status": 500}, {"status": 503}, {"status": 502}, {"content": "too late"})
    cid = f"retry-exhausted-{stream}"
    resp = chat(
        retrying,
        {"messages": [{"role": "user", "content": "x"}], "stream": stream},
        {"X-Hermes-Session-Id": cid},
    )
    # before the first token a stream's failure is a plain HTTP error
    assert resp.status_code == 502, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert error_code(resp) == "upstream_error"
    assert len(upstream.chat_bodies()) == 3
    assert retrying.transcript(cid) == []


def test_rate_limit_exhausted_is_429_with_retry_after(
    retrying: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue(*[{"status": 429, "retry_after": "0"} for _ in range(3)])
    resp = chat(retrying, {"messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 429, resp.text
    assert error_code(resp) == "upstream_rate_limited"
    assert int(resp.headers["retry-after"]) >= 1
    assert len(upstream.chat_bodies()) == 3


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_400_is_not_retried(
    retrying: TetherServer, upstream: ScriptedUpstream, stream: bool
) -> None:
    bad = {"message": "bad temperature", "type": "invalid_request_error", "code": "bad_param"}
    upstream.queue({"status": 400, "error": bad}, {"content": "a retry would get this"})
    resp = chat(
        retrying,
        {"messages": [{"role": "user", "content": "x"}], "stream": stream, "temperature": 9},
    )
    assert resp.status_code == 400, resp.text
    assert error_code(resp) == "bad_param"
    assert "bad temperature" in resp.json()["error"]["message"]
    bodies = upstream.chat_bodies()
    assert len(bodies) == 1
    assert bodies[0]["temperature"] == 9


def test_streaming_retry_500_then_ok_gives_one_complete_stream(
    retrying: TetherServer, upstream: ScriptedUpstream, clients: Clients
) -> None:
    upstream.queue({"status": 500}, {"content": "streamed after a retry", "chunk_size": 3})
    sdk = clients(retrying, **{"X-Hermes-Session-Id": "retry-stream-1"})
    stream = sdk.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finishes: list[str] = []
    tether: dict[str, Any] | None = None
    usage = None
    for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
            continue
        pieces.append(chunk.choices[0].delta.content or "")
        if chunk.choices[0].finish_reason:
            finishes.append(chunk.choices[0].finish_reason)
            tether = (chunk.model_extra or {}).get("tether")
    assert "".join(pieces) == "streamed after a retry"
    assert finishes == ["stop"]
    assert usage is not None and usage.completion_tokens > 0
    assert tether is not None and tether["conversation_id"] == "retry-stream-1"
    bodies = upstream.chat_bodies()
    assert len(bodies) == 2
    assert bodies[0]["messages"] == bodies[1]["messages"]
    assert all(b["stream"] is True for b in bodies)
    assert [(r, c) for _, r, c in retrying.transcript("retry-stream-1")] == [
        ("user", '"stream it"'),
        ("assistant", '"streamed after a retry"'),
    ]
    assert turns_of(retrying, "retry-stream-1") == [("completed", 1, 1, 2)]


def test_streaming_retry_raw_sse_has_no_duplicate_or_error(
    retrying: TetherServer, upstream: ScriptedUpstream
) -> None:
    upstream.queue({"status": 503}, {"status": 500}, {"content": "abcdefgh", "chunk_size": 2})
    resp = chat(
        retrying,
        {"messages": [{"role": "user", "content": "raw"}], "stream": True},
        {"X-Hermes-Session-Id": "retry-stream-raw"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("error" not in c for c in chunks)
    assert len({c["id"] for c in chunks}) == 1  # one upstream completion, not a splice
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "abcdefgh"
    assert len(upstream.chat_bodies()) == 3
    assert len(retrying.transcript("retry-stream-raw")) == 2


# -- 3: tool calls -------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ARGS = '{"city": "Paris", "unit": "celsius", "note": "a longer argument string to split"}'
CALL = {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": ARGS}}


@pytest.mark.parametrize("resend", ["suffix", "full"], ids=["bridge-suffix", "full-history"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tool_calls_pass_through_and_are_stored(
    server: TetherServer, upstream: ScriptedUpstream, clients: Clients, stream: bool, resend: str
) -> None:
    cid = f"tools-{'s' if stream else 'j'}-{resend}"
    upstream.queue({"tool_calls": [CALL]}, {"content": "It is 21 degrees in Paris."})
    sdk = clients(server, **{"X-Hermes-Session-Id": cid})
    question = {"role": "user", "content": "What's the weather in Paris?"}

    def ask(messages: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
        """One call; returns the assistant message (as a client would resend it) and finish."""
        if not stream:
            completion = sdk.chat.completions.create(
                model="scripted",
                messages=messages,  # type: ignore[arg-type]
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
            )
            choice = completion.choices[0]
            return choice.message.model_dump(exclude_none=True), str(choice.finish_reason)
        with sdk.chat.completions.stream(
            model="scripted",
            messages=messages,  # type: ignore[arg-type]
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        ) as s:
            for _ in s:
                pass
            final = s.get_final_completion()
        choice = final.choices[0]
        message = choice.message.model_dump(exclude_none=True)
        for call in message.get("tool_calls") or ():
            call["function"].pop("parsed_arguments", None)
        message.pop("parsed", None)
        return message, str(choice.finish_reason)

    asked, finish = ask([question])
    assert finish == "tool_calls"
    calls = asked["tool_calls"]
    assert len(calls) == 1
    assert calls[0]["id"] == "call_w1"
    assert calls[0]["function"]["name"] == "get_weather"
    assert calls[0]["function"]["arguments"] == ARGS  # reassembled whole when streamed
    assert json.loads(calls[0]["function"]["arguments"])["city"] == "Paris"

    result = {"role": "tool", "tool_call_id": "call_w1", "content": '{"temp_c": 21}'}
    follow_up = [result] if resend == "suffix" else [question, asked, result]
    answered, finish = ask(follow_up)
    assert finish == "stop"
    assert answered["content"] == "It is 21 degrees in Paris."

    bodies = upstream.chat_bodies()
    assert len(bodies) == 2
    assert bodies[0]["tools"] == [WEATHER_TOOL]
    sent = bodies[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[0]["content"] == question["content"]
    assert [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in sent[1]["tool_calls"]
    ] == [("call_w1", "get_weather", ARGS)]
    assert not sent[1].get("content")
    assert sent[2]["tool_call_id"] == "call_w1" and sent[2]["content"] == '{"temp_c": 21}'

    resp = httpx2.get(f"{server.url}/v1/conversations/{cid}/messages", timeout=10)
    assert resp.status_code == 200, resp.text
    stored = resp.json()["data"]
    assert [(m["seq"], m["role"]) for m in stored] == [
        (1, "user"),
        (2, "assistant"),
        (3, "tool"),
        (4, "assistant"),
    ]
    assert stored[0]["content"] == question["content"]
    assert [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in stored[1]["tool_calls"]
    ] == [("call_w1", "get_weather", ARGS)]
    assert not stored[1]["content"]
    assert stored[2]["tool_call_id"] == "call_w1" and stored[2]["content"] == '{"temp_c": 21}'
    assert stored[3]["content"] == "It is 21 degrees in Paris." and "tool_calls" not in stored[3]
    assert stored[1]["turn_id"] != stored[3]["turn_id"]
    assert stored[2]["turn_id"] == stored[3]["turn_id"]


# -- 4: CORS --------------------------------------------------------------------------------------

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def cors_server(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    srv = TetherServer(
        tmp_path_factory.mktemp("cors") / "cors.db",
        scripted.base_url,
        TETHER_CORS_ORIGINS=json.dumps([ORIGIN]),
    ).start()
    yield srv
    srv.stop()


def header_set(value: str | None) -> set[str]:
    return {h.strip().lower() for h in (value or "").split(",") if h.strip()}


def test_cors_preflight_allows_tether_headers(cors_server: TetherServer) -> None:
    resp = httpx2.options(
        f"{cors_server.url}/v1/chat/completions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-hermes-session-id,content-type,authorization",
        },
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in header_set(resp.headers.get("access-control-allow-methods")) | {
        m.upper() for m in header_set(resp.headers.get("access-control-allow-methods"))
    }
    allowed = header_set(resp.headers.get("access-control-allow-headers"))
    assert {"x-hermes-session-id", "content-type", "authorization"} <= allowed
    assert {"x-tether-conversation", "idempotency-key"} <= allowed


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_cors_post_exposes_conversation_headers(
    cors_server: TetherServer, upstream: ScriptedUpstream, stream: bool
) -> None:
    resp = chat(
        cors_server,
        {"messages": [{"role": "user", "content": "from the browser"}], "stream": stream},
        {"Origin": ORIGIN, "X-Hermes-Session-Id": f"cors-{stream}"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    exposed = header_set(resp.headers.get("access-control-expose-headers"))
    assert {"x-hermes-session-id", "x-tether-conversation", "x-tether-turn"} <= exposed
    assert resp.headers["x-hermes-session-id"] == f"cors-{stream}"


def test_cors_error_response_still_carries_cors_headers(cors_server: TetherServer) -> None:
    resp = chat(cors_server, {"messages": []}, {"Origin": ORIGIN})
    assert resp.status_code == 400, resp.text
    assert resp.headers["access-control-allow-origin"] == ORIGIN


def test_cors_unlisted_origin_gets_no_allow_origin(
    cors_server: TetherServer, upstream: ScriptedUpstream
) -> None:
    evil = "https://evil.example"
    pre = httpx2.options(
        f"{cors_server.url}/v1/chat/completions",
        headers={
            "Origin": evil,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=10,
    )
    assert pre.status_code >= 400
    assert "access-control-allow-origin" not in pre.headers
    resp = chat(cors_server, {"messages": [{"role": "user", "content": "hi"}]}, {"Origin": evil})
    assert resp.status_code == 200  # CORS is the browser's call; the server just doesn't allow
    assert "access-control-allow-origin" not in resp.headers
    assert "access-control-allow-credentials" not in resp.headers


def test_cors_off_by_default(server: TetherServer) -> None:
    pre = httpx2.options(
        f"{server.url}/v1/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert "access-control-allow-origin" not in pre.headers


# -- 5: the bind guard ----------------------------------------------------------------------------


def test_serve_on_all_interfaces_refuses_without_keys(tmp_path: Path) -> None:
    srv = TetherServer(tmp_path / "open.db", None)
    started = time.monotonic()
    out = srv.cli("serve", "--host", "0.0.0.0")
    assert time.monotonic() - started < 30
    assert out.returncode != 0
    said = words(out.stderr + out.stdout)
    assert "tether keys create" in said, said
    assert "0.0.0.0" in said
    # nothing listens on the port it would have used
    with pytest.raises(httpx2.TransportError):
        httpx2.get(f"{srv.url}/health", timeout=1)


def test_serve_on_all_interfaces_starts_once_a_key_exists(
    tmp_path: Path, upstream: ScriptedUpstream, clients: Clients
) -> None:
    srv = TetherServer(tmp_path / "keyed.db", upstream.base_url, TETHER_HOST="0.0.0.0")
    key = srv.create_key("public")
    srv.start()
    try:
        assert "0.0.0.0" in words(srv.output())
        sdk = clients(srv, key)
        reply = sdk.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "over all interfaces"}]
        )
        assert reply.choices[0].message.content == "echo: over all interfaces"
        with pytest.raises(openai.AuthenticationError):
            clients(srv).chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "no key"}]
            )
    finally:
        srv.stop()


# -- 6: config file precedence --------------------------------------------------------------------


class Serve:
    """`tether serve ARGS` with exactly the given environment, expected on `port`."""

    def __init__(self, log: Path, port: int, args: list[str], env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.logfile = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "serve", *args],
            env=env,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"{self.url}/health", self.proc, 20, log)
        except RuntimeError:
            self.close()
            raise

    def output(self) -> str:
        return words(self.log.read_text(errors="replace"))

    def models(self) -> list[str]:
        resp = httpx2.get(f"{self.url}/v1/models", timeout=10)
        assert resp.status_code == 200, resp.text
        return [m["id"] for m in resp.json()["data"]]

    def close(self) -> None:
        stop(self.proc)
        self.logfile.close()


@pytest.fixture
def config_file(tmp_path: Path) -> tuple[Path, int, Path]:
    port = free_port()
    db = tmp_path / "from-file.db"
    cfg = tmp_path / "tether.toml"
    cfg.write_text(
        f'host = "127.0.0.1"\nport = {port}\ndatabase_url = "sqlite:///{db}"\n'
        'default_model = "from-file"\n'
    )
    return cfg, port, db


def distinct_port(*taken: int) -> int:
    while (port := free_port()) in taken:
        pass
    return port


def test_config_file_values_are_used(tmp_path: Path, config_file: tuple[Path, int, Path]) -> None:
    cfg, port, db = config_file
    srv = Serve(tmp_path / "a.log", port, ["--config", str(cfg)], clean_env())
    try:
        assert srv.models() == ["from-file"]
        said = srv.output()
        assert f"listening http://127.0.0.1:{port}" in said
        assert "model from-file" in said
        assert f"sqlite:///{db}" in said.replace(" ", "")  # rich breaks long words anywhere
        health = httpx2.get(f"{srv.url}/health", timeout=10).json()
        assert health["upstream"] is False
    finally:
        srv.close()
    assert db.exists()  # the file's database_url was used


def test_config_file_named_by_tether_config_env(
    tmp_path: Path, config_file: tuple[Path, int, Path]
) -> None:
    cfg, port, _ = config_file
    srv = Serve(tmp_path / "b.log", port, [], clean_env(TETHER_CONFIG=str(cfg)))
    try:
        assert srv.models() == ["from-file"]
    finally:
        srv.close()


def test_env_overrides_config_file(tmp_path: Path, config_file: tuple[Path, int, Path]) -> None:
    cfg, file_port, db = config_file
    env_port = distinct_port(file_port)
    env = clean_env(TETHER_PORT=str(env_port), TETHER_DEFAULT_MODEL="from-env")
    srv = Serve(tmp_path / "c.log", env_port, ["--config", str(cfg)], env)
    try:
        assert srv.models() == ["from-env"]
        said = srv.output()
        assert f"listening http://127.0.0.1:{env_port}" in said
        assert "model from-env" in said and "model from-file" not in said
        # what the env leaves alone still comes from the file
        assert f"sqlite:///{db}" in said.replace(" ", "")
        with pytest.raises(httpx2.TransportError):
            httpx2.get(f"http://127.0.0.1:{file_port}/health", timeout=1)
    finally:
        srv.close()


def test_flag_overrides_env_and_config_file(
    tmp_path: Path, config_file: tuple[Path, int, Path]
) -> None:
    cfg, file_port, _ = config_file
    env_port = distinct_port(file_port)
    flag_port = distinct_port(file_port, env_port)
    env = clean_env(TETHER_PORT=str(env_port), TETHER_DEFAULT_MODEL="from-env")
    args = ["--config", str(cfg), "--port", str(flag_port), "--default-model", "from-flag"]
    srv = Serve(tmp_path / "d.log", flag_port, args, env)
    try:
        assert srv.models() == ["from-flag"]
        said = srv.output()
        assert f"listening http://127.0.0.1:{flag_port}" in said
        assert "model from-flag" in said
        assert "model from-env" not in said and "model from-file" not in said
    finally:
        srv.close()


def test_missing_config_file_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    out = run_cli("serve", "--config", str(missing), env=clean_env(), timeout=30)
    assert out.returncode != 0
    assert "nope.toml" in out.stderr


# -- 7: keys --------------------------------------------------------------------------------------


def test_keys_create_prints_key_last_and_stores_only_its_hash(tmp_path: Path) -> None:
    srv = TetherServer(tmp_path / "keys.db", None)
    out = srv.cli("keys", "create", "--tenant", "x")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    key = lines[-1]
    assert key == key.strip() and key.startswith("tk_") and len(key) > 30
    assert " " not in key
    assert all(key not in line for line in lines[:-1])  # printed once
    assert key not in out.stderr
    second = srv.create_key("x")
    assert second != key and second.startswith("tk_")

    with srv.db() as conn:
        rows = conn.execute(
            "SELECT tenant_id, key_hash, prefix, revoked_at FROM api_keys ORDER BY id"
        ).fetchall()
        assert rows == [
            ("x", hashlib.sha256(key.encode()).hexdigest(), key[:7], None),
            ("x", hashlib.sha256(second.encode()).hexdigest(), second[:7], None),
        ]
        # the key itself is nowhere in the database, in any table or column
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                for value in row:
                    assert key not in str(value), (table, row)
    for path in tmp_path.glob("keys.db*"):
        assert key.encode() not in path.read_bytes(), path


def test_created_key_authenticates_its_tenant(
    tmp_path: Path, upstream: ScriptedUpstream, clients: Clients
) -> None:
    srv = TetherServer(tmp_path / "auth.db", upstream.base_url)
    key = srv.create_key("x")
    srv.start()
    try:
        sdk = clients(srv, key, **{"X-Hermes-Session-Id": "keyed-1"})
        sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "k"}])
        assert len(srv.transcript("keyed-1", tenant="x")) == 2
        with pytest.raises(openai.AuthenticationError):
            clients(srv, key[:-1] + ("A" if key[-1] != "A" else "B")).models.list()
    finally:
        srv.stop()


# -- 8: help --------------------------------------------------------------------------------------


def help_of(*args: str) -> str:
    out = run_cli(*args, "--help", env=clean_env(COLUMNS="120"), timeout=30)
    assert out.returncode == 0, out.stderr
    return words(out.stdout)


def test_help_exits_zero_and_lists_commands() -> None:
    said = help_of()
    for command in ("serve", "migrate", "keys", "conversations", "version"):
        assert command in said
    serve = help_of("serve")
    for flag in (
        "--config",
        "--host",
        "--port",
        "--database-url",
        "--upstream-base-url",
        "--upstream-api-key",
        "--default-model",
    ):
        assert flag in serve
    keys = help_of("keys", "create")
    assert "--tenant" in keys


def test_serve_help_names_the_env_variables() -> None:
    said = help_of("serve")
    missing = [name for name in MAIN_SETTINGS_ENV if name not in said]
    assert missing == [], said


def test_main_help_names_the_env_variables() -> None:
    said = help_of()
    assert any(name in said for name in MAIN_SETTINGS_ENV), said


# -- 9: health ------------------------------------------------------------------------------------


def test_health_needs_no_auth_even_with_keys(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    srv = TetherServer(tmp_path / "health.db", upstream.base_url)
    srv.create_key("h")
    srv.start()
    try:
        for headers in ({}, {"Authorization": "Bearer tk_not_a_real_key"}):
            resp = httpx2.get(f"{srv.url}/health", headers=headers, timeout=10)
            assert resp.status_code == 200, resp.text
            assert resp.headers["content-type"].startswith("application/json")
            body = resp.json()
            assert body["status"] == "ok"
            assert body["database"] == "sqlite" and body["upstream"] is True
        # while everything else is closed to anonymous callers
        models = httpx2.get(f"{srv.url}/v1/models", timeout=10)
        assert models.status_code == 401
        assert error_code(models) == "missing_api_key"
    finally:
        srv.stop()
