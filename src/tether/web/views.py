"""The dashboard's pages that only read: the conversation list (and search results in its
place when there is a query), and one conversation, streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tether.engine import conversations, search
from tether.engine.service import Engine
from tether.model import Conversation, Message, Turn
from tether.store.base import ConversationFilter, Store
from tether.web.render import PageError, page, stream
from tether.web.session import Session, base_of, engine_of

PAGE = 25  # conversations per page of the list
HITS = 50  # search hits shown
TURNS = 50  # the most recent turns shown on a conversation's page
BATCH = 500  # messages read at a time while a transcript streams
FILTERS = ("title", "model", "from", "to")


async def home(request: Request, session: Session, form: Mapping[str, str]) -> Response:
    """The list, newest activity first, a page at a time (keyset: `after` = the last id
    shown); with `q`, the search hits instead, under the same filters."""
    engine = engine_of(request)
    params = request.query_params
    fields = {name: params.get(name, "").strip() for name in ("q", *FILTERS)}
    filters = filters_of(fields)
    if fields["q"]:
        hits = await search.search(
            engine, session.tenant, fields["q"], group=True, limit=HITS, filters=filters
        )
        return await page(request, session, "search.html", fields=fields, hits=hits)
    after = params.get("after") or None
    listing = await conversations.list_page(
        engine, session.tenant, limit=PAGE, after=after, filters=filters
    )
    older = None
    if listing.has_more and listing.items:
        kept = {k: v for k, v in fields.items() if v and k != "q"}
        older = "?" + urlencode({**kept, "after": listing.items[-1].id})
    return await page(
        request,
        session,
        "list.html",
        fields=fields,
        items=listing.items,
        older=older,
        paged=after is not None,
        deleted=params.get("deleted"),
    )


def filters_of(fields: Mapping[str, str]) -> ConversationFilter | None:
    """The list's filters from its form: a title substring, a model, created from/to (dates,
    UTC, both days included)."""
    start, end = _day(fields.get("from", ""), "from"), _day(fields.get("to", ""), "to")
    if not any(fields.get(name) for name in FILTERS):
        return None
    return ConversationFilter(
        title=fields.get("title") or None,
        model=fields.get("model") or None,
        created_after=start.timestamp() - 1e-6 if start else None,
        created_before=(end + timedelta(days=1)).timestamp() if end else None,
    )


def _day(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise PageError(400, f"{name}: a date as YYYY-MM-DD, not {text!r}") from None
    return datetime.combine(day, time(0), UTC)


@dataclass(slots=True)
class Row:
    """One message as the transcript shows it."""

    seq: int
    role: str
    created_at: float
    tokens: int
    text: str
    notes: list[str] = field(default_factory=list)  # non-text parts: "[image_url]"
    calls: list[dict[str, str]] = field(default_factory=list)  # name, id, arguments
    call_id: str | None = None  # a tool result's call
    name: str | None = None
    covered: bool = False  # before the latest checkpoint's cut: not in the model's view


def row_of(m: Message, covered_through: int) -> Row:
    text, notes = _text(m.content)
    calls = []
    for call in m.tool_calls or ():
        fn = call.get("function") or {}
        calls.append(
            {
                "name": str(fn.get("name") or call.get("type") or "call"),
                "id": str(call.get("id") or ""),
                "arguments": str(fn.get("arguments") or ""),
            }
        )
    return Row(
        seq=m.seq,
        role=m.role,
        created_at=m.created_at,
        tokens=m.tokens,
        text=text,
        notes=notes,
        calls=calls,
        call_id=m.tool_call_id,
        name=m.name,
        covered=m.seq <= covered_through,
    )


def _text(content: Any) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return str(content), []
    texts, notes = [], []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif isinstance(part, dict):
            notes.append(f"[{part.get('type', 'part')}]")
        else:
            texts.append(str(part))
    return "\n".join(texts), notes


async def transcript(store: Store, conv: Conversation, covered: int) -> AsyncIterator[Row]:
    """The messages, oldest first, read BATCH at a time as the page streams."""
    after = 0
    while after < conv.last_seq:
        batch = await store.load_messages(conv.pk, after, after + BATCH)
        if not batch:
            return
        for m in batch:
            yield row_of(m, covered)
        after = batch[-1].seq


@dataclass(slots=True)
class Overview:
    """What the page shows above the transcript, read once the head has left."""

    detail: dict[str, Any]
    markers: dict[int, list[dict[str, Any]]]  # seq -> the checkpoints that cut after it
    covered: int  # the latest checkpoint's last covered seq (0: none)
    turns: list[Turn]


async def overview(engine: Engine, conv: Conversation) -> Overview:
    detail = await conversations.detail(engine, conv)
    markers: dict[int, list[dict[str, Any]]] = {}
    for c in detail.get("checkpoints") or ():
        markers.setdefault(int(c["covers_through_seq"]), []).append(c)
    covered = max(markers, default=0)
    turns = await engine.store.list_turns(conv.pk, TURNS)
    return Overview(detail, markers, covered, turns)


async def conversation(request: Request, session: Session, form: Mapping[str, str]) -> Response:
    """A conversation's page, streamed: the head at once, then the overview (checkpoints,
    context, turns), then the transcript with a marker after each checkpoint's last message."""
    engine = engine_of(request)
    conv = await conversations.get(engine, session.tenant, request.path_params["conversation_id"])
    if conv.id != request.path_params["conversation_id"]:  # an alias: to its own id's page
        return RedirectResponse(f"{base_of(request)}/c/{quote(conv.id, '')}", 303)
    shown: dict[str, Overview] = {}

    async def load() -> Overview:
        shown["o"] = await overview(engine, conv)
        return shown["o"]

    def messages() -> AsyncIterator[Row]:
        return transcript(engine.store, conv, shown["o"].covered if shown else 0)

    return stream(request, session, "conversation.html", conv=conv, load=load, messages=messages)
