"""A real browser's EventSource reads Tether's streams, keep-alives included: Debian's chromium,
driven by Playwright, follows a streamed turn that pauses longer than the ping interval (through
`GET …/turns/{id}/events`, the stream's GET form, since EventSource cannot POST) and must see
exactly the events the POST stream carried — no empty event from a ping, ids in order.

(A browser's parser drops an event whose data is empty, so the old ping framing — a blank line
after the comment — passed here too: it broke the `openai` package's and httpx-sse's decoders,
which tests/test_sse.py checks byte for byte. This test is the browser's side of the same
framing: events split across writes, ids, comments mid-stream, CORS.)"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest

from tests.support import ScriptedUpstream, TetherServer

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FOLLOW = """
(url) => new Promise((resolve) => {
  const got = [];
  const source = new EventSource(url);
  source.onmessage = (e) => {
    got.push({data: e.data, id: e.lastEventId, type: e.type});
    if (e.data === "[DONE]") { source.close(); resolve({got}); }
  };
  source.onerror = () => { got.push({error: source.readyState}); };
  setTimeout(() => { source.close(); resolve({got, timeout: true}); }, 20000);
})
"""


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    s = TetherServer(
        tmp_path_factory.mktemp("browser") / "tether.db",
        scripted.base_url,
        TETHER_SSE_PING_SECONDS="0.2",
        TETHER_CORS_ORIGINS='["*"]',
    ).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tool_srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    """The same, running a built-in tool on the server side (its progress is in the stream)."""
    s = TetherServer(
        tmp_path_factory.mktemp("browser-tools") / "tether.db",
        scripted.base_url,
        TETHER_SSE_PING_SECONDS="0.2",
        TETHER_CORS_ORIGINS='["*"]',
        TETHER_BUILTIN_TOOLS='["current_time"]',
    ).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """A blank page on another loopback port: a page that is not itself on loopback may not
    reach loopback at all (Private Network Access), so the test page is served from one."""

    class Blank(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>tether</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _post_stream(srv: TetherServer, out: dict[str, Any]) -> None:
    body = {
        "model": "scripted",
        "stream": True,
        "messages": [{"role": "user", "content": "think, then answer"}],
    }
    headers = {"X-Hermes-Session-Id": "browser-1"}
    with httpx2.stream(
        "POST", f"{srv.url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as r:
        out["turn"] = r.headers["x-tether-turn"]
        out["ready"].set()
        out["data"] = [
            line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")
        ]


def _follow(srv: TetherServer, page_url: str) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """POST a stream, follow it in chromium's EventSource: what it saw, how long, the POST's."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(page_url)
            posted: dict[str, Any] = {"ready": threading.Event()}
            poster = threading.Thread(target=_post_stream, args=(srv, posted))
            poster.start()
            assert posted["ready"].wait(10)
            url = f"{srv.url}/v1/conversations/browser-1/turns/{posted['turn']}/events"
            t0 = time.monotonic()
            seen = page.evaluate(FOLLOW, url)
            elapsed = time.monotonic() - t0
            poster.join(30)
        finally:
            browser.close()
    return seen, elapsed, posted


def test_eventsource_follows_a_paused_stream_and_sees_only_its_events(
    srv: TetherServer, upstream: ScriptedUpstream, page_url: str
) -> None:
    upstream.queue(
        {"content": "an answer in several chunks", "pause": 2.0, "pause_after_chunks": 2}
    )
    seen, elapsed, posted = _follow(srv, page_url)
    assert not seen.get("timeout"), seen
    events = seen["got"]
    assert all("error" not in e for e in events), events
    assert elapsed > 1.0  # it followed the turn through the pause (pings every 0.2 s)
    datas = [e["data"] for e in events]
    assert "" not in datas  # no keep-alive became an event
    assert datas == posted["data"]  # exactly the POST stream's events
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    chunks = [json.loads(d) for d in datas if d != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "an answer in several chunks"


def test_eventsource_reads_a_stream_with_server_tool_progress(
    tool_srv: TetherServer, upstream: ScriptedUpstream, page_url: str
) -> None:
    clock = {"id": "call_clock", "type": "function"}
    clock["function"] = {"name": "current_time", "arguments": "{}"}  # type: ignore[assignment]
    upstream.queue(
        {"tool_calls": [clock]},
        {"content": "an answer in several chunks", "pause": 2.0, "pause_after_chunks": 2},
    )
    seen, _, posted = _follow(tool_srv, page_url)
    assert not seen.get("timeout"), seen
    events = seen["got"]
    assert all("error" not in e for e in events), events
    datas = [e["data"] for e in events]
    assert datas == posted["data"]
    chunks = [json.loads(d) for d in datas if d != "[DONE]"]
    progress = [c["tether"]["tool"]["event"] for c in chunks if "tool" in c.get("tether", {})]
    assert progress == ["started", "finished"]
    assert not any(c["choices"] and c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "an answer in several chunks"
