"""Six real clients nobody on the team wrote, against a real `tether serve` (issue 11, item 7).

Each client lives in its own virtual environment, `.venv-clients/<name>/`, built by `make
clients` (which `make test` runs) from its pin file `clients/<name>.txt`. Its driver,
`tests/clients/drive_<name>.py`, runs with that venv's python as one long-lived process per
client (see `_drive.py`): this module sends it a scenario, the scripted upstream (a real HTTP
server process) answers as scripted, and afterwards the transcript is read back from the server:
exactly the expected messages, nothing duplicated, one new conversation per scenario (no fork),
every turn on it.

Scenarios (each client, in its own idiom):

- ``header``: three turns naming the conversation by `X-Hermes-Session-Id`;
- ``history``: three turns resending the whole history, no id — they must continue one
  conversation (matched by its history), which the responses name;
- ``stream``: a streamed turn during which the upstream goes silent for longer than the SSE ping
  interval (the server runs with `TETHER_SSE_PING_SECONDS=0.3`), then a plain turn;
- ``tools``: two tool round trips and a last turn, the client keeping its own history: the
  upstream's tool-call arguments come compact once and spaced once, and the clients send them
  back re-encoded (``test_tool_arguments_on_the_wire`` records how, talking to the upstream
  directly) — that must not fork;
- ``structured``: the client's structured output (pydantic-ai: a `final_result` tool call it
  never answers; the others: `response_format`), then a next turn by the header alone.
"""

from __future__ import annotations

import ast
import json
import queue
import re
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support import ScriptedUpstream, TetherServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENVS = ROOT / ".venv-clients"
PINS = ROOT / "clients"
CLIENTS = ("openai", "langchain_openai", "llm", "pydantic_ai", "openai_agents", "litellm")
PING_SECONDS = 0.3
PAUSE = 1.0  # the upstream's silence mid-stream: three pings' worth
ANY = object()  # a stored field whose value the server chooses

# How each client sends a tool call's arguments back (observed on the wire, see
# test_tool_arguments_on_the_wire): as received, or re-encoded by json.dumps (spaced) or
# compactly.
COMPACT, SPACED = '{"city":"Oslo"}', '{"city": "Bergen"}'
REENCODES = {
    "openai": "as received",
    "langchain_openai": "json.dumps",
    "llm": "json.dumps",
    "pydantic_ai": "compact",
    "openai_agents": "as received",
    "litellm": "as received",
}
ENCODED = {
    "as received": ('{"city":"Oslo"}', '{"city": "Bergen"}'),
    "json.dumps": ('{"city": "Oslo"}', '{"city": "Bergen"}'),
    "compact": ('{"city":"Oslo"}', '{"city":"Bergen"}'),
}


# -- the client processes ---------------------------------------------------------------------


class Driver:
    """One client's driver: its venv's python running drive_<name>.py, fed jobs on stdin."""

    def __init__(self, name: str, log: Path) -> None:
        venv, pin = VENVS / name, PINS / f"{name}.txt"
        stamp = venv / ".installed"
        build = f"`make clients` (`make test` does) or `make {stamp.relative_to(ROOT)}` builds it"
        if not stamp.exists():
            pytest.fail(f"the {name} client's virtual environment {venv} is missing: {build}")
        if pin.stat().st_mtime > stamp.stat().st_mtime:
            pytest.fail(f"{pin} changed since {venv} was built: {build} again")
        self.name, self.log = name, log
        self.logfile = log.open("ab")
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "python"), str(HERE / f"drive_{name}.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.logfile,
            text=True,
            cwd=HERE,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._next(timeout=120)
        assert ready.get("ready"), ready
        self.versions: dict[str, str] = ready["versions"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"the {self.name} driver gave no answer in {timeout:g} s{self.tail()}")
        if line is None:
            pytest.fail(f"the {self.name} driver exited ({self.proc.poll()}){self.tail()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def tail(self) -> str:
        self.logfile.flush()
        text = self.log.read_text(errors="replace")[-3000:]
        return f"; its stderr ({self.log}) ends:\n{text}" if text else ""

    def run(
        self, scenario: str, base_url: str, conversation: str | None, prompts: list[str]
    ) -> dict[str, Any]:
        assert self.proc.stdin is not None
        job = {
            "scenario": scenario,
            "base_url": base_url,
            "conversation": conversation,
            "prompts": prompts,
        }
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        result = self._next(timeout=90)
        if not result["ok"]:
            trace = "\n".join(str(result.get("traceback", "")).splitlines()[-25:])
            pytest.fail(f"{self.name} failed the {scenario} scenario: {result['error']}\n{trace}")
        return result

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.logfile.close()


class Drivers:
    """The client processes of this module, each started on first use."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, Driver] = {}

    def __getitem__(self, name: str) -> Driver:
        if name not in self.running:
            self.running[name] = Driver(name, self.logs / f"{name}.log")
        return self.running[name]

    def close(self) -> None:
        for driver in self.running.values():
            driver.close()


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drivers]:
    found = Drivers(tmp_path_factory.mktemp("clients"))
    yield found
    found.close()


@pytest.fixture(scope="module")
def tether(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    db = tmp_path_factory.mktemp("tether-clients") / "tether.db"
    srv = TetherServer(db, scripted.base_url, TETHER_SSE_PING_SECONDS=str(PING_SECONDS)).start()
    yield srv
    srv.stop()


# -- reading back what the server stored -------------------------------------------------------


def conversations(server: TetherServer) -> dict[str, Any]:
    """Every conversation: id -> (its fork origin's id or None)."""
    with server.db() as conn:
        rows = conn.execute(
            "SELECT c.id, p.id FROM conversations c LEFT JOIN conversations p "
            "ON p.pk = c.forked_from_pk"
        ).fetchall()
    return dict(rows)


def turns(server: TetherServer, conversation_id: str) -> list[tuple[str, int]]:
    with server.db() as conn:
        rows: list[tuple[str, int]] = conn.execute(
            "SELECT t.status, t.stream FROM turns t JOIN conversations c "
            "ON c.pk = t.conversation_pk WHERE c.id = ? ORDER BY t.started_at",
            (conversation_id,),
        ).fetchall()
    return rows


def stored(server: TetherServer, conversation_id: str) -> list[dict[str, Any]]:
    """The transcript as the API serves it (GET /v1/conversations/{id}/messages, every page)."""
    messages: list[dict[str, Any]] = []
    after = 0
    while True:
        r = httpx2.get(
            f"{server.url}/v1/conversations/{conversation_id}/messages",
            params={"after": after},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        page = r.json()["data"]
        if not page:
            return messages
        messages += page
        after = page[-1]["seq"]


def text(content: Any) -> str | None:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or None


def normal(message: dict[str, Any]) -> tuple[Any, ...]:
    """A message as the contract compares it: role, text, tool calls (arguments parsed)."""
    calls = tuple(
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"))
        for c in message.get("tool_calls") or ()
    )
    return (message["role"], text(message.get("content")), calls, message.get("tool_call_id"))


def user(content: str) -> tuple[Any, ...]:
    return ("user", content, (), None)


def assistant(content: str | None, *calls: tuple[str, str, dict[str, Any]]) -> tuple[Any, ...]:
    return ("assistant", content, tuple(calls), None)


def tool(call_id: str, content: Any) -> tuple[Any, ...]:
    return ("tool", content, (), call_id)


def matches(got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> bool:
    return len(got) == len(expected) and all(
        all(e is ANY or g == e for g, e in zip(gm, em, strict=True))
        for gm, em in zip(got, expected, strict=True)
    )


@dataclass
class Run:
    """One scenario of one client: its conversation id (None: id-less) and unique texts."""

    client: str
    scenario: str
    server: TetherServer
    upstream: ScriptedUpstream
    conversation: str | None
    tag: str
    before: dict[str, Any]

    @classmethod
    def start(
        cls,
        client: str,
        scenario: str,
        server: TetherServer,
        upstream: ScriptedUpstream,
        named: bool = True,
    ) -> Run:
        nonce = uuid.uuid4().hex[:8]
        conversation = f"{client}-{scenario}-{nonce}" if named else None
        # Unique texts: an id-less history must match only this run's conversation.
        tag = f"[{client} {scenario} {nonce}]"
        return cls(client, scenario, server, upstream, conversation, tag, conversations(server))

    def landed(self, expected: list[tuple[Any, ...]], turn_count: int) -> str:
        """The one conversation this run made holds exactly `expected` in `turn_count` turns."""
        after = conversations(self.server)
        new = {cid: origin for cid, origin in after.items() if cid not in self.before}
        forks = {cid: origin for cid, origin in new.items() if origin is not None}
        assert not forks, f"{self.client} forked (new id: its origin): {forks}"
        assert len(new) == 1, f"{self.client}: expected one new conversation, got {sorted(new)}"
        (cid,) = new
        if self.conversation is not None:
            assert cid == self.conversation, (cid, self.conversation)
        messages = [m for m in stored(self.server, cid) if m["role"] not in ("system", "developer")]
        got = [normal(m) for m in messages]
        users = [m[1] for m in got if m[0] == "user"]
        assert len(users) == len(set(users)), f"duplicated user message in {cid}: {users}"
        assert matches(got, expected), (
            f"{self.client}: transcript of {cid}:\n"
            + "\n".join(map(repr, got))
            + "\nexpected:\n"
            + "\n".join(map(repr, expected))
        )
        statuses = turns(self.server, cid)
        assert [s for s, _ in statuses] == ["completed"] * turn_count, statuses
        return cid

    def model_saw(self) -> list[tuple[Any, ...]]:
        """The non-system messages of the upstream's last request (what Tether sent)."""
        body = self.upstream.chat_bodies()[-1]
        return [normal(m) for m in body["messages"] if m["role"] not in ("system", "developer")]


# -- the scenarios -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pings(tether: TetherServer, scripted: ScriptedUpstream) -> int:
    """How many pings the server sends during the scripted pause (read raw, once)."""
    scripted.reset()
    scripted.queue({"content": "pause, then go on", "pause": PAUSE, "pause_after_chunks": 1})
    seen = 0
    with httpx2.stream(
        "POST",
        f"{tether.url}/v1/chat/completions",
        json={"stream": True, "messages": [{"role": "user", "content": "ping probe"}]},
        headers={"X-Hermes-Session-Id": f"ping-probe-{uuid.uuid4().hex[:8]}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            seen += line.startswith(":")
    return seen


def test_the_server_pings_during_the_pause(pings: int) -> None:
    """The precondition of the stream scenario: the pause is longer than the ping interval."""
    assert pings >= 2, (
        f"{pings} SSE pings during a {PAUSE} s pause with TETHER_SSE_PING_SECONDS={PING_SECONDS}:"
        " the stream scenarios do not test the pings"
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_header(
    client: str, tether: TetherServer, upstream: ScriptedUpstream, drivers: Drivers
) -> None:
    run = Run.start(client, "header", tether, upstream)
    prompts = [f"{run.tag} my name is Ada", f"{run.tag} what is my name?", f"{run.tag} thanks"]
    result = drivers[client].run("header", f"{tether.url}/v1", run.conversation, prompts)
    assert result["replies"] == [f"echo: {p}" for p in prompts]
    expected = [m for p in prompts for m in (user(p), assistant(f"echo: {p}"))]
    run.landed(expected, turn_count=3)
    assert run.model_saw() == expected[:-1]  # the model saw the whole conversation
    ids = [i for i in result.get("conversation_ids", []) if i is not None]
    assert ids == [run.conversation] * len(ids)


@pytest.mark.parametrize("client", CLIENTS)
def test_history(
    client: str, tether: TetherServer, upstream: ScriptedUpstream, drivers: Drivers
) -> None:
    run = Run.start(client, "history", tether, upstream, named=False)
    prompts = [f"{run.tag} hello", f"{run.tag} and again", f"{run.tag} once more"]
    result = drivers[client].run("history", f"{tether.url}/v1", None, prompts)
    assert result["replies"] == [f"echo: {p}" for p in prompts]
    expected = [m for p in prompts for m in (user(p), assistant(f"echo: {p}"))]
    cid = run.landed(expected, turn_count=3)
    # where the client exposes it, every response named that one conversation
    ids = [i for i in result.get("conversation_ids", []) if i is not None]
    assert ids == [cid] * len(ids)


@pytest.mark.parametrize("client", CLIENTS)
def test_stream(
    client: str, tether: TetherServer, upstream: ScriptedUpstream, drivers: Drivers, pings: int
) -> None:
    run = Run.start(client, "stream", tether, upstream)
    streamed = f"{run.tag} Let me think. The answer is 42."
    upstream.queue({"content": streamed, "pause": PAUSE, "pause_after_chunks": 3})
    prompts = [f"{run.tag} think hard", f"{run.tag} and then?"]
    result = drivers[client].run("stream", f"{tether.url}/v1", run.conversation, prompts)
    assert result["stream"]["text"] == streamed
    assert result["stream"]["max_gap"] >= PAUSE / 2, result["stream"]  # it read through it
    assert result["replies"] == [streamed, f"echo: {prompts[1]}"]
    expected = [user(prompts[0]), assistant(streamed), user(prompts[1])]
    expected.append(assistant(f"echo: {prompts[1]}"))
    cid = run.landed(expected, turn_count=2)
    assert turns(tether, cid)[0] == ("completed", 1)  # stored as a streamed turn
    if client == "openai":  # the final chunk says where it ran
        assert result["tether"]["conversation_id"] == run.conversation, result["tether"]
    assert pings >= 2, "the server sent no pings during the pause: this did not test them"


@pytest.fixture(scope="module")
def tool_tether(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    """A second server, running a built-in tool on the server side (docs/tools.md)."""
    db = tmp_path_factory.mktemp("tether-server-tools") / "tether.db"
    srv = TetherServer(db, scripted.base_url, TETHER_BUILTIN_TOOLS='["current_time"]').start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("client", CLIENTS)
def test_stream_with_a_server_tool(
    client: str, tool_tether: TetherServer, upstream: ScriptedUpstream, drivers: Drivers
) -> None:
    """The model calls a tool Tether runs: the client reads the stream's progress chunks (an
    empty delta and a `tether.tool` object) and the answer, and never sees the call."""
    run = Run.start(client, "stream", tool_tether, upstream)
    streamed = f"{run.tag} It is late."
    clock = {"id": "call_clock", "type": "function"}
    clock["function"] = {"name": "current_time", "arguments": "{}"}  # type: ignore[assignment]
    upstream.queue({"tool_calls": [clock]}, {"content": streamed})
    prompts = [f"{run.tag} what time is it?", f"{run.tag} thanks"]
    result = drivers[client].run("stream", f"{tool_tether.url}/v1", run.conversation, prompts)
    assert result["stream"]["text"] == streamed
    assert result["replies"] == [streamed, f"echo: {prompts[1]}"]
    expected = [
        user(prompts[0]),
        assistant(None, ("call_clock", "current_time", {})),
        tool("call_clock", ANY),
        assistant(streamed),
        user(prompts[1]),
        assistant(f"echo: {prompts[1]}"),
    ]
    run.landed(expected, turn_count=2)


def tool_call(call_id: str, arguments: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }


def script_tools(upstream: ScriptedUpstream) -> None:
    upstream.queue(
        {"tool_calls": [tool_call("call_oslo", COMPACT)]},
        {"content": "It is sunny in Oslo."},
        {"tool_calls": [tool_call("call_bergen", SPACED)]},
        {"content": "It is sunny in Bergen."},
    )


def tool_prompts(tag: str) -> list[str]:
    return [f"{tag} weather in Oslo?", f"{tag} and in Bergen?", f"{tag} thanks"]


def tool_replies(prompts: list[str]) -> list[str]:
    """What the client answers to the tool scenario's prompts (script_tools' script)."""
    return ["It is sunny in Oslo.", "It is sunny in Bergen.", f"echo: {prompts[2]}"]


def tool_transcript(prompts: list[str]) -> list[tuple[Any, ...]]:
    """The one conversation the tool scenario must leave: two tool round trips, a last turn."""
    return [
        user(prompts[0]),
        assistant(None, ("call_oslo", "get_weather", {"city": "Oslo"})),
        tool("call_oslo", "sunny in Oslo"),
        assistant("It is sunny in Oslo."),
        user(prompts[1]),
        assistant(None, ("call_bergen", "get_weather", {"city": "Bergen"})),
        tool("call_bergen", "sunny in Bergen"),
        assistant("It is sunny in Bergen."),
        user(prompts[2]),
        assistant(f"echo: {prompts[2]}"),
    ]


@pytest.mark.parametrize("named", [True, False], ids=["by-header", "no-id"])
@pytest.mark.parametrize("client", CLIENTS)
def test_tools(
    client: str, named: bool, tether: TetherServer, upstream: ScriptedUpstream, drivers: Drivers
) -> None:
    """Named by the header, or with no id (then matched by its history, re-encoded or not)."""
    run = Run.start(client, "tools", tether, upstream, named=named)
    script_tools(upstream)
    prompts = tool_prompts(run.tag)
    result = drivers[client].run("tools", f"{tether.url}/v1", run.conversation, prompts)
    assert result["replies"] == tool_replies(prompts)
    expected = tool_transcript(prompts)
    cid = run.landed(expected, turn_count=5)
    assert run.model_saw() == expected[:-1]
    # stored exactly as the upstream sent them, whatever the client sent back later
    calls = [m["tool_calls"] for m in stored(tether, cid) if m.get("tool_calls")]
    assert [c[0]["function"]["arguments"] for c in calls] == [COMPACT, SPACED]


def test_the_agents_sdk_on_the_responses_api(
    tether: TetherServer, upstream: ScriptedUpstream, drivers: Drivers
) -> None:
    """The OpenAI Agents SDK's own default model, OpenAIResponsesModel: each run continues the
    last response by previous_response_id (the tool loop too), so the server holds one
    conversation: every turn on it, nothing duplicated, the model shown all of it."""
    run = Run.start("openai_agents", "responses", tether, upstream, named=False)
    script_tools(upstream)
    prompts = tool_prompts(run.tag)
    result = drivers["openai_agents"].run("responses", f"{tether.url}/v1", None, prompts)
    assert result["replies"] == tool_replies(prompts)
    expected = tool_transcript(prompts)
    cid = run.landed(expected, turn_count=5)
    assert run.model_saw() == expected[:-1]
    last = httpx2.get(f"{tether.url}/v1/responses/{result['last_response_id']}", timeout=10)
    assert last.json()["conversation"]["id"] == cid


@pytest.mark.parametrize("client", CLIENTS)
def test_tool_arguments_on_the_wire(
    client: str, upstream: ScriptedUpstream, drivers: Drivers
) -> None:
    """The tools scenario against the scripted upstream directly: how the client sends the
    upstream's tool calls back (the premise of the tools scenario, kept honest)."""
    script_tools(upstream)
    tag = f"[{client} wire {uuid.uuid4().hex[:8]}]"
    drivers[client].run("tools", upstream.base_url, None, tool_prompts(tag))
    sent: dict[str, str] = {}
    for body in upstream.chat_bodies():
        for m in body["messages"]:
            for call in m.get("tool_calls") or ():
                sent.setdefault(call["id"], call["function"]["arguments"])
    got = (sent["call_oslo"], sent["call_bergen"])
    assert got == ENCODED[REENCODES[client]], f"{client} sends {COMPACT}, {SPACED} back as {got}"


@pytest.mark.parametrize("client", CLIENTS)
def test_structured(
    client: str, tether: TetherServer, upstream: ScriptedUpstream, drivers: Drivers
) -> None:
    run = Run.start(client, "structured", tether, upstream)
    answer = '{"city":"Oslo","country":"Norway"}'
    final_call = {"id": "call_final", "type": "function"}
    final_call["function"] = {"name": "final_result", "arguments": answer}
    uses_tool = client == "pydantic_ai"
    upstream.queue({"tool_calls": [final_call]} if uses_tool else {"content": answer})
    prompts = [f"{run.tag} the capital of Norway?", f"{run.tag} thanks"]
    result = drivers[client].run("structured", f"{tether.url}/v1", run.conversation, prompts)
    assert result["replies"] == [json.loads(answer), f"echo: {prompts[1]}"]
    asked = upstream.chat_bodies()[0]
    if uses_tool:
        names = [t["function"]["name"] for t in asked.get("tools") or ()]
        assert "final_result" in names, asked
        first = [
            user(prompts[0]),
            assistant(None, ("call_final", "final_result", json.loads(answer))),
            tool("call_final", ANY),  # the server closed the call the client never answered
        ]
    else:
        assert asked.get("response_format", {}).get("type") == "json_schema", asked
        first = [user(prompts[0]), assistant(answer)]
    expected = [*first, user(prompts[1]), assistant(f"echo: {prompts[1]}")]
    run.landed(expected, turn_count=2)


def test_versions_match_the_pins(drivers: Drivers) -> None:
    """Each venv runs the version its pin file names (and the same openai SDK underneath)."""
    for name in CLIENTS:
        pinned = (PINS / f"{name}.txt").read_text()
        lines = [line.split("#")[0].strip() for line in pinned.splitlines()]
        pins = dict(line.split("==") for line in lines if line)
        versions = drivers[name].versions
        for package, version in pins.items():
            assert versions[package.split("[")[0]] == version, (name, package, versions)


# -- the README's snippets are the drivers' code -----------------------------------------------

README = ROOT / "README.md"
SNIPPET = re.compile(r"<!-- tests/clients/drive_(\w+)\.py -->\n(.*?)(?=<!-- )", re.S)
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def regions(source: str) -> list[str]:
    """The driver's code between `# README begin` and `# README end` lines, dedented."""
    found, lines = [], None
    for line in source.splitlines():
        if line.strip() == "# README begin":
            lines = []
        elif line.strip() == "# README end" and lines is not None:
            found.append(textwrap.dedent("\n".join(lines)) + "\n")
            lines = None
        elif lines is not None:
            lines.append(line)
    return found


def imported(tree: ast.AST) -> set[tuple[str | None, str]]:
    names: set[tuple[str | None, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names |= {(node.module, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {(alias.name, "") for alias in node.names}
    return names


@pytest.mark.parametrize("client", CLIENTS)
def test_the_readme_snippet_is_the_drivers_code(client: str) -> None:
    readme = README.read_text()
    snippets = dict(SNIPPET.findall(readme))
    assert client in snippets, f"README, Works with: no snippet for {client}"
    blocks = FENCE.findall(snippets[client])
    python = "\n".join(code for lang, code in blocks if lang == "python")
    source = (HERE / f"drive_{client}.py").read_text()
    # the driver's README regions, in order
    at = 0
    for region in regions(source):
        found = python.find(region, at)
        assert found >= 0, f"README's {client} snippet lacks the driver's code:\n{region}"
        at = found + len(region)
    # and nothing else but what the driver imports and lines it has
    assert imported(ast.parse(python)) <= imported(ast.parse(source))
    lines = {line.strip() for line in source.splitlines()}
    for line in python.splitlines():
        if line.strip() and not line.startswith(("import ", "from ")):
            assert line.strip() in lines, f"README's {client} snippet: not in the driver: {line}"
    if client == "llm":  # the model file the driver writes
        (models_yaml,) = (
            ast.literal_eval(node.value)
            for node in ast.parse(source).body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "MODELS_YAML" for t in node.targets)
        )
        assert [code for lang, code in blocks if lang == "yaml"] == [models_yaml]
    # the table names the version the pin installs
    pins = [line for line in (PINS / f"{client}.txt").read_text().splitlines() if "==" in line]
    version = pins[0].split("==")[1].split("#")[0].strip()
    section = readme.split("\n## Works with\n")[1].split("\n## ")[0]
    assert f"| {version} |" in section, (client, version)
