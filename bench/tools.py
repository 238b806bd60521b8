"""The tool rows of `make bench` (issue 15): what a server-side tool round costs Tether, and a
turn with 8 parallel calls to a fast MCP tool.

Its own `tether serve` (with `current_time` built in and bench/mcp_fast.py as a stdio MCP
server), the scripted upstream, c=1, each request on a new conversation:

- *plain turn*: the model answers at once (the tools are offered, none is called);
- *one tool round*: the model calls `current_time`, then answers: one more model call and one
  tool step. Tether's CPU per round = its CPU per such turn − per plain turn; the built-in tool
  itself takes microseconds and the model runs in another process, so the difference is
  Tether's own work for a round (target: ≤ the CPU of a plain turn);
- *8 parallel MCP calls*: the model calls `mcp__fast__ping` 8 times in one message.

Run alone: `.venv/bin/python -m bench.tools`.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import load, procs
from bench.load import Monitor, Req

JSON = {"Content-Type": "application/json"}
FAST = Path(__file__).with_name("mcp_fast.py")


@dataclass
class ToolsRun:
    plain: load.Result
    round1: load.Result
    parallel: load.Result

    @property
    def per_round_ms(self) -> float:
        return self.round1.cpu_ms_per_req["tether"] - self.plain.cpu_ms_per_req["tether"]

    @property
    def ok(self) -> bool:
        return self.per_round_ms <= self.plain.cpu_ms_per_req["tether"]


def _calls(name: str, k: int, tag: int) -> list[dict[str, Any]]:
    return [
        {"id": f"c{tag}-{i}", "type": "function", "function": {"name": name, "arguments": "{}"}}
        for i in range(k)
    ]


async def _row(
    tether: procs.Tether, upstream: procs.Upstream, name: str, calls: tuple[str, int] | None, n: int
) -> load.Result:
    counter = itertools.count()
    warmup = 20
    if calls is not None:  # one scripted item per request, matched by its tag
        items = [
            {"match": f"[t{i}]", "tool_calls": _calls(calls[0], calls[1], i)}
            for i in range(n + warmup)
        ]
        upstream.http.post("/_script/queue", json=items).raise_for_status()

    def make(_w: int) -> Req:
        text = f"{name} [t{next(counter)}]"
        body = orjson.dumps({"model": "scripted", "messages": [{"role": "user", "content": text}]})
        return Req(f"{tether.url}/v1/chat/completions", body, JSON, b"echo: " + text.encode())

    client = load.client()
    try:
        return await load.run(
            client,
            name,
            make,
            concurrency=1,
            n=n,
            warmup=warmup,
            max_s=8.0,
            stream=False,
            monitor=Monitor({"tether": tether.pid, "upstream": upstream.pid}, tether.pid),
        )
    finally:
        await client.aclose()
        upstream.reset()


async def _all(tether: procs.Tether, upstream: procs.Upstream, n: int) -> ToolsRun:
    plain = await _row(tether, upstream, "plain turn (tools offered)", None, n)
    round1 = await _row(tether, upstream, "one tool round (current_time)", ("current_time", 1), n)
    parallel = await _row(
        tether, upstream, "8 parallel MCP calls", ("mcp__fast__ping", 8), max(50, n // 4)
    )
    return ToolsRun(plain, round1, parallel)


def run(workdir: Path, n: int = 600) -> ToolsRun:
    db = workdir / "tools.db"
    procs.migrate(db)
    upstream = procs.Upstream()
    tether = procs.Tether(db, upstream.base_url)
    tether.env["TETHER_BUILTIN_TOOLS"] = '["current_time"]'
    servers = [{"name": "fast", "command": [sys.executable, str(FAST)]}]
    tether.env["TETHER_MCP_SERVERS"] = orjson.dumps(servers).decode()
    try:
        tether.start()
        deadline = time.monotonic() + 20  # the MCP server connects in the background
        while "mcp.up" not in tether.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        return asyncio.run(_all(tether, upstream, n))
    finally:
        tether.stop()
        upstream.close()


def line(r: ToolsRun) -> str:
    plain = r.plain.cpu_ms_per_req["tether"]
    verdict = "PASS" if r.ok else "FAIL"
    return (
        f"{verdict} tool round CPU: {r.per_round_ms:.2f} ms per round (Tether, one tool round "
        f"{r.round1.cpu_ms_per_req['tether']:.2f} − plain turn {plain:.2f} ms); target ≤ the "
        f"plain turn's {plain:.2f} ms. 8 parallel MCP calls: p50 {r.parallel.p(50):.1f} ms "
        f"per turn, Tether CPU {r.parallel.cpu_ms_per_req['tether']:.2f} ms per turn"
    )


def markdown(r: ToolsRun) -> str:
    rows = [
        "## Server-side tools (issue 15)",
        "",
        "Its own `tether serve` with `current_time` built in and a stdio MCP server with one "
        "instant tool (`bench/mcp_fast.py`), c=1, a new conversation per request. *tether* is "
        "the Tether process alone (the MCP server is a process of its own, not counted).",
        "",
        "| row | n | p50 ms | p99 ms | req/s | CPU ms/req tether / upstream | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in (r.plain, r.round1, r.parallel):
        cpu = res.cpu_ms_per_req
        rows.append(
            f"| {res.name} | {res.n} | {res.p(50):.2f} | {res.p(99):.2f} | {res.rps:,.0f} | "
            f"{cpu.get('tether', 0):.2f} / {cpu.get('upstream', 0):.2f} | {res.errors} |"
        )
    rows += ["", line(r)]
    return "\n".join(rows) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tether-tools-") as tmp:
        r = run(Path(tmp))
    print(markdown(r))


if __name__ == "__main__":
    main()
