"""The dashboard at /ui in a real browser: Debian's chromium, driven by Playwright, against a
keyed `tether serve` and the scripted upstream. Sign in, open a compacted conversation and see
its marker and summary, search, rename, export, delete with confirmation, sign out; a wrong key
is refused, a page without the session cookie goes to sign-in, a form without its CSRF token is
refused, a revoked key ends its session, and the list fits a phone's width.

`TETHER_DOCS_SCREENSHOT=1` also writes docs/dashboard.png (a conversation page with its
compaction marker) from the marker test."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support import ScriptedUpstream, TetherServer

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SUMMARISER = "New messages to fold in"  # matches only the summariser's request
SUMMARY = "The keeper fed the quokka at noon; the walrus pool is closed for cleaning."
DOCS_SHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"
WINDOW = 2000


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[TetherServer]:
    """A keyed server (tenant acme's key made before it starts), a small window so that a
    compaction has something to cut."""
    s = TetherServer(
        tmp_path_factory.mktemp("dashboard") / "tether.db",
        scripted.base_url,
        TETHER_MODEL_CONTEXT_WINDOWS=f'{{"scripted": {WINDOW}}}',
        TETHER_COMPACTION_MIN_TAIL_MESSAGES="2",
    )
    s.create_key("acme")
    s.start()
    yield s
    s.stop()


def chat(srv: TetherServer, cid: str, messages: list[dict[str, Any]], **body: Any) -> Any:
    r = httpx2.post(
        f"{srv.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {srv.keys['acme']}", "X-Hermes-Session-Id": cid},
        json={"model": "scripted", "messages": messages, **body},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def say(srv: TetherServer, cid: str, text: str) -> None:
    chat(srv, cid, [{"role": "user", "content": text}])


@pytest.fixture(scope="module")
def zoo(srv: TetherServer, scripted: ScriptedUpstream) -> str:
    """A conversation with a client tool call and its result, then compacted on demand."""
    scripted.reset()
    cid = "zoo-1"
    say(srv, cid, "Plan the zoo visit")
    say(srv, cid, "First the big cats: " + " ".join(f"cat{i}" for i in range(60)))
    say(srv, cid, "The walrus <b>show</b> starts at ten, " + " ".join(f"w{i}" for i in range(60)))
    call = {"id": "call_weigh", "type": "function"}
    call["function"] = {"name": "weigh", "arguments": '{"animal": "quokka"}'}  # type: ignore[assignment]
    scripted.queue({"tool_calls": [call]})
    tool = {"type": "function", "function": {"name": "weigh", "parameters": {"type": "object"}}}
    chat(srv, cid, [{"role": "user", "content": "How heavy is a quokka?"}], tools=[tool])
    chat(srv, cid, [{"role": "tool", "tool_call_id": "call_weigh", "content": "3.2 kg"}])
    say(srv, cid, "Thanks, and the penguins? " + " ".join(f"p{i}" for i in range(60)))
    scripted.queue({"match": SUMMARISER, "content": SUMMARY})
    r = httpx2.post(
        f"{srv.url}/v1/conversations/{cid}/compact",
        headers={"Authorization": f"Bearer {srv.keys['acme']}"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["compacted"] is True, r.text
    say(srv, cid, "After the compaction: where is the exit?")
    return cid


@pytest.fixture(scope="module")
def park(srv: TetherServer, scripted: ScriptedUpstream) -> str:
    """A plain conversation the tests that must not change zoo-1 use."""
    for i in range(3):
        say(srv, "park-1", f"park bench {i}")
    return "park-1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser: Any, srv: TetherServer) -> Iterator[Any]:
    ctx = browser.new_context(base_url=srv.url, accept_downloads=True)
    yield ctx
    ctx.close()


def sign_in(page: Any, key: str, path: str = "/ui/") -> Any:
    """Open `path`, land on the sign-in page, sign in; the response of the form's POST."""
    page.goto(path)
    assert "/ui/login" in page.url
    page.fill("#key", key)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("form[action$='/login'] button[type=submit]")
    page.wait_for_load_state()
    return posted.value


def no_overflow(page: Any) -> tuple[int, int]:
    width, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, (page.url, width, inner)
    return width, inner


def test_a_page_without_the_session_cookie_goes_to_sign_in(
    context: Any, srv: TetherServer, zoo: str
) -> None:
    r = context.request.get(f"/ui/c/{zoo}", max_redirects=0)
    assert r.status == 303
    assert r.headers["location"] == f"/ui/login?next=%2Fui%2Fc%2F{zoo}"
    page = context.new_page()
    page.goto(f"/ui/c/{zoo}")
    assert page.url == f"{srv.url}/ui/login?next=%2Fui%2Fc%2F{zoo}"
    assert page.locator("h1").inner_text() == "Sign in"
    assert "quokka" not in page.content()


def test_a_wrong_key_is_refused(context: Any, srv: TetherServer) -> None:
    page = context.new_page()
    posted = sign_in(page, "tk_not-a-key-at-all")
    assert posted.status == 401
    assert "/ui/login" in page.url
    assert "not valid" in page.locator(".error").inner_text()
    assert context.request.get("/ui/", max_redirects=0).status == 303  # still signed out


def test_sign_in_then_the_compacted_conversation_shows_its_marker_and_summary(
    context: Any, srv: TetherServer, zoo: str
) -> None:
    page = context.new_page()
    console: list[str] = []  # a blocked inline script or style (CSP) would show here
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    posted = sign_in(page, srv.keys["acme"], f"/ui/c/{zoo}")
    assert posted.status == 303
    assert page.url == f"{srv.url}/ui/c/{zoo}"  # back where the redirect came from
    cookie = next(c for c in context.cookies() if c["name"] == "tether_ui")
    assert cookie["httpOnly"] and cookie["path"] == "/ui" and cookie["sameSite"] == "Lax"
    marker = page.locator(".marker")
    assert marker.count() == 1
    cut = marker.locator(".cut").inner_text()
    assert "Compaction 1" in cut and "→" in cut and "scripted" in cut
    checkpoint = httpx2.get(
        f"{srv.url}/v1/conversations/{zoo}/context",
        headers={"Authorization": f"Bearer {srv.keys['acme']}"},
    ).json()["checkpoints"][0]
    before, after = checkpoint["tokens_before"], checkpoint["tokens_after"]
    assert f"{before} → {after} tokens" in cut
    # placed right after the last message it covers; messages before it are dimmed
    covers = checkpoint["covers_through_seq"]
    assert page.locator(f"#m{covers} + .marker").count() == 1
    assert "covered" in (page.locator(f"#m{covers}").get_attribute("class") or "")
    assert "covered" not in (page.locator(f"#m{covers + 1}").get_attribute("class") or "")
    summary = marker.locator("details.summary")
    assert not summary.locator(".text").is_visible()  # folded
    summary.locator("summary").click()
    assert summary.locator(".text").inner_text() == SUMMARY
    # the tool call and its result are folded too
    call = page.locator("details.tool-call").first
    assert "weigh" in call.locator("summary").inner_text()
    assert not call.locator("pre").is_visible()
    call.locator("summary").click()
    assert call.locator("pre").inner_text() == '{"animal": "quokka"}'
    assert "call_weigh" in page.locator("details.tool-result summary").inner_text()
    page.click("button[data-fold=open]")  # the page's one script: unfold / fold all
    folds = "() => [...document.querySelectorAll('.transcript details')].map(d => d.open)"
    assert page.evaluate(folds) == [True, True, True]
    page.click("button[data-fold=close]")
    assert page.evaluate(folds) == [False, False, False]
    # the context bar, the turns with their status
    assert page.locator(".context svg.bar line.threshold").count() == 1
    assert page.locator(".turns tbody tr").count() == 7
    assert page.locator(".turns tbody tr.status-completed").count() == 7
    # the markup escaped what the user wrote
    assert page.locator(".transcript .text b").count() == 0
    assert "<b>show</b>" in page.locator("#m5 .text").inner_text()
    headers = page.goto(f"/ui/c/{zoo}").headers  # type: ignore[union-attr]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert console == []
    if os.environ.get("TETHER_DOCS_SCREENSHOT"):
        shoot(context, zoo)


def shoot(context: Any, cid: str) -> None:
    """docs/dashboard.png: the conversation page, its summary unfolded, the marker in view."""
    page = context.new_page()
    page.set_viewport_size({"width": 1000, "height": 1250})
    page.goto(f"/ui/c/{cid}")
    page.locator(".marker details.summary summary").click()
    page.locator("details.tool-call summary").first.click()
    page.locator("details.tool-result summary").first.click()
    page.locator(".turns summary").click()
    page.screenshot(path=str(DOCS_SHOT), full_page=True)
    page.close()


def test_search_finds_a_word_and_highlights_it(context: Any, srv: TetherServer, zoo: str) -> None:
    page = context.new_page()
    sign_in(page, srv.keys["acme"])
    page.fill("#q", "walrus")
    page.click(".filters .search button")
    page.wait_for_load_state()
    assert "q=walrus" in page.url
    hits = page.locator(".hit")
    assert hits.count() >= 1
    first = hits.first
    assert first.locator(".title").get_attribute("href", timeout=1000) is not None
    marks = first.locator(".snippet mark").all_inner_texts()
    assert marks and all(m.lower() == "walrus" for m in marks)
    assert first.locator(".snippet b").count() == 0  # the snippet's markup is text
    # a word only the checkpoint's summary holds: a summary hit, linking to its marker
    page.goto("/ui/?q=keeper")
    summary_hit = page.locator(".hit").first
    assert "summary" in summary_hit.locator(".meta").inner_text()
    summary_hit.locator(".title").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/ui/c/{zoo}#cp1")
    # a malformed query is a 400 page with the reason
    r = page.goto("/ui/?q=%22unclosed")
    assert r is not None and r.status == 400
    assert page.locator(".error").inner_text()


def test_rename_export_delete_with_confirmation_then_sign_out(
    context: Any, srv: TetherServer, zoo: str
) -> None:
    cid = "doomed-1"
    say(srv, cid, "a conversation to rename, export and delete: the otter sleeps")
    page = context.new_page()
    sign_in(page, srv.keys["acme"], f"/ui/c/{cid}")
    # rename
    page.fill("#title", "Otter notes")
    page.click("#rename button")
    page.wait_for_load_state()
    assert page.url == f"{srv.url}/ui/c/{cid}"
    assert page.locator("h1.conv-title").inner_text() == "Otter notes"
    page.goto("/ui/")
    assert page.locator(".conv .title", has_text="Otter notes").count() == 1
    # export, both forms, as downloads
    page.goto(f"/ui/c/{cid}")
    with page.expect_download() as got:
        page.click("#export-json")
    assert got.value.suggested_filename == f"{cid}.json"
    exported = json.loads(Path(got.value.path()).read_text())
    assert exported["conversation"]["id"] == cid
    assert exported["conversation"]["title"] == "Otter notes"
    text = json.dumps(exported["messages"])
    assert "the otter sleeps" in text and "echo: a conversation to rename" in text
    with page.expect_download() as got:
        page.click("#export-md")
    assert got.value.suggested_filename == f"{cid}.md"
    markdown = Path(got.value.path()).read_text()
    assert markdown.startswith("# Otter notes") and "the otter sleeps" in markdown
    # delete: a confirmation page first, nothing gone until it is confirmed
    page.click("#delete")
    page.wait_for_load_state()
    assert page.url == f"{srv.url}/ui/c/{cid}/delete"
    assert "cannot be undone" in page.locator("section.danger").inner_text()
    page.goto("/ui/")
    assert page.locator(".conv code", has_text=cid).count() == 1
    page.goto(f"/ui/c/{cid}/delete")
    page.click("#confirm-delete")
    page.wait_for_load_state()
    assert page.url == f"{srv.url}/ui/?deleted={cid}"
    assert page.locator(".conv code", has_text=cid).count() == 0
    assert page.locator(".conv code", has_text=zoo).count() == 1  # only that one went
    assert page.goto(f"/ui/c/{cid}").status == 404  # type: ignore[union-attr]
    # sign out: the cookie goes, and /ui is the sign-in page again
    page.goto("/ui/")
    (session,) = [c["value"] for c in context.cookies() if c["name"] == "tether_ui"]
    page.click(".signout button")
    page.wait_for_load_state()
    assert page.url.startswith(f"{srv.url}/ui/login")
    # (the sign-in page sets a fresh anonymous cookie for its own form's CSRF token)
    assert session not in [c["value"] for c in context.cookies()]
    page.goto("/ui/")
    assert "/ui/login" in page.url
    # the old cookie put back (a copy kept elsewhere) does not bring the session back
    context.add_cookies([{"name": "tether_ui", "value": session, "url": f"{srv.url}/ui"}])
    assert context.request.get("/ui/", max_redirects=0).status == 303  # ended, not only gone


def test_a_form_without_its_csrf_token_is_refused(
    context: Any, srv: TetherServer, park: str
) -> None:
    page = context.new_page()
    sign_in(page, srv.keys["acme"], f"/ui/c/{park}")
    url = f"/ui/c/{park}/rename"
    r = context.request.post(url, form={"title": "hijacked"}, max_redirects=0)
    assert r.status == 403 and "CSRF" in r.text()
    r = context.request.post(url, form={"title": "hijacked", "csrf": "x" * 43}, max_redirects=0)
    assert r.status == 403
    token = page.locator("#rename input[name=csrf]").get_attribute("value")
    r = context.request.post(url, form={"title": "Park", "csrf": token}, max_redirects=0)
    assert r.status == 303  # the same form with its token passes
    page.reload()
    assert page.locator("h1.conv-title").inner_text() == "Park"
    # a sign-out without the token does not sign out either
    assert context.request.post("/ui/logout", max_redirects=0).status == 403
    assert context.request.get("/ui/", max_redirects=0).status == 200


def test_a_revoked_key_ends_its_session(context: Any, srv: TetherServer, park: str) -> None:
    out = srv.cli("keys", "create", "--tenant", "acme")  # not create_key: srv.keys stays
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    page = context.new_page()
    sign_in(page, key)
    assert context.request.get("/ui/", max_redirects=0).status == 200
    out = srv.cli("keys", "revoke", key)
    assert out.returncode == 0, out.stderr
    r = context.request.get("/ui/", max_redirects=0)
    assert r.status == 303 and r.headers["location"].startswith("/ui/login")


def test_the_list_and_a_transcript_fit_a_phone_width(
    browser: Any, srv: TetherServer, zoo: str, park: str
) -> None:
    ctx = browser.new_context(
        base_url=srv.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    try:
        page = ctx.new_page()
        sign_in(page, srv.keys["acme"])
        assert page.locator(".conv").count() >= 2
        assert no_overflow(page) == (390, 390)
        page.goto(f"/ui/c/{zoo}")
        page.locator(".turns summary").click()  # the turns' table scrolls inside its box
        no_overflow(page)
        page.goto("/ui/?q=walrus")
        no_overflow(page)
    finally:
        ctx.close()


def test_open_mode_needs_no_sign_in_and_says_auth_is_off(
    browser: Any, server: TetherServer, scripted: ScriptedUpstream
) -> None:
    r = httpx2.post(
        f"{server.url}/v1/chat/completions",
        headers={"X-Hermes-Session-Id": "open-1"},
        json={"model": "scripted", "messages": [{"role": "user", "content": "hello"}]},
        timeout=30,
    )
    assert r.status_code == 200
    ctx = browser.new_context(base_url=server.url)
    try:
        page = ctx.new_page()
        page.goto("/ui/")
        assert page.url == f"{server.url}/ui/"
        assert "Auth off" in page.locator(".auth-off").inner_text()
        assert page.locator(".conv code", has_text="open-1").count() == 1
        assert page.locator(".signout").count() == 0
        page.goto("/ui/login")  # nothing to sign in to
        assert page.url == f"{server.url}/ui/"
    finally:
        ctx.close()


def test_a_10000_message_transcript_page_streams_from_the_first_byte(
    tmp_path: Path, scripted: ScriptedUpstream
) -> None:
    """The page of a 10,000-message conversation starts at once (the head is sent before the
    transcript is read: issue 16's target is the first byte within 100 ms) and then streams
    every message; nothing per message is read beyond the messages themselves."""
    n = 10_000
    db = tmp_path / "big.db"
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        pool.submit(asyncio.run, _seed(db, n)).result()
    srv = TetherServer(db, scripted.base_url).start()
    try:
        url = f"{srv.url}/ui/c/big-1"
        timings = []
        with httpx2.Client(timeout=60) as http:
            http.get(f"{srv.url}/ui/")  # a first request warms the server up
            for _ in range(3):
                t0 = time.perf_counter()
                with http.stream("GET", url) as r:
                    head = time.perf_counter() - t0
                    body = b""
                    first = None
                    for chunk in r.iter_raw():
                        body += chunk
                        if first is None and b'id="m1"' in body:
                            first = time.perf_counter() - t0
                timings.append((head, first or 0.0, time.perf_counter() - t0))
        assert r.status_code == 200
        assert body.count(b'<article class="msg') == n and body.rstrip().endswith(b"</html>")
        head, first, whole = sorted(timings)[1]  # the median run, by its first byte
        print(
            f"10,000 messages: first byte {head * 1e3:.1f} ms, first message "
            f"{first * 1e3:.1f} ms, whole page {whole * 1e3:.0f} ms ({len(body)} bytes)"
        )
        assert head < 0.1
        assert first < 1.0
    finally:
        srv.stop()


async def _seed(db: Path, n: int) -> None:
    from tether.model import Message
    from tether.store import open_store
    from tether.store.base import ImportedConversation

    store = open_store(f"sqlite:///{db}")
    await store.open()
    await store.migrate()
    start = time.time() - n
    text = "a message of the long conversation, " * 6
    messages = [
        Message(
            role="user" if i % 2 else "assistant",
            content=f"{i}: {text}",
            seq=i,
            tokens=60,
            created_at=start + i,
        )
        for i in range(1, n + 1)
    ]
    conv = ImportedConversation(
        id="big-1",
        aliases=[],
        title="Ten thousand messages",
        model="scripted",
        system_prompt=None,
        metadata={},
        created_at=start,
        updated_at=start + n,
        messages=messages,
        checkpoints=[],
    )
    assert await store.import_conversation("default", conv) is not None
    await store.close()
