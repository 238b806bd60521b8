"""The summariser prompt (iterative, structured) and how a summary is framed in the model's view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from tether.compaction import ledger as ledger_mod
from tether.compaction.ledger import redact
from tether.compaction.tokens import count_text
from tether.model import Message

PROMPT_VERSION = "tether-summary-v1"
MARKER = "[[TETHER-SUMMARISER]]"
BEGIN = "[Earlier conversation, compacted by Tether: reference only]"
END = "[End of compacted summary. Respond to the latest messages below.]"

SECTIONS = (
    "Goal",
    "Constraints and preferences of the user",
    "Decisions made",
    "Completed actions",
    "Open tasks",
    "Latest unfulfilled ask (verbatim)",
    "Critical context",
)

SYSTEM = f"""{MARKER} {PROMPT_VERSION}
You compress the earlier part of a conversation so that it can continue without the original
messages. Write a summary with exactly these sections, as Markdown headings:
{chr(10).join(f"## {s}" for s in SECTIONS)}
Rules:
- Copy identifiers exactly: names, ids, numbers with units, file paths, URLs, emails.
- Quote the latest ask of the user that has not been answered yet, word for word.
- Keep what a colleague taking over would need; drop pleasantries and repetition.
- If a previous summary is given, update it with the new messages: keep what is still true,
  change what changed, never drop open tasks or constraints that still hold.
- Never include secrets (keys, passwords, tokens).
- Stay under {{budget}} tokens. Output only the summary."""


def _render_message(m: Message) -> str:
    content = m.content
    if isinstance(content, list):
        content = " ".join(
            str(p.get("text", "[image]")) if isinstance(p, dict) else str(p) for p in content
        )
    line = f"[{m.seq}] {m.role}"
    if m.name:
        line += f" ({m.name})"
    line += f": {content or ''}"
    for call in m.tool_calls or ():
        fn = call.get("function") or {}
        line += f"\n  -> calls {fn.get('name')}({fn.get('arguments')}) id={call.get('id')}"
    if m.tool_call_id:
        line = f"[{m.seq}] tool result for {m.tool_call_id}: {content or ''}"
    return line


def system_tokens() -> int:
    return count_text(SYSTEM) + 8


def chunks(span: Sequence[Message], max_tokens: int) -> list[list[Message]]:
    """Split a span into pieces the summariser can read in one call (a message bigger than a
    piece is cut in the middle), so a small model can fold a long span in several passes."""
    out: list[list[Message]] = [[]]
    used = 0
    for m in span:
        size = m.tokens or count_text(_render_message(m))
        if size > max_tokens:
            text = _render_message(m)
            keep = max(200, max_tokens * 3 // 2)  # ~2 chars per token, on the safe side
            m = replace(
                m,
                role="user" if m.role == "tool" else m.role,
                content=text[:keep] + " …[cut for the summariser]… " + text[-keep:],
                tool_calls=None,
                tool_call_id=None,
            )
            size = count_text(str(m.content)) + 8
        if out[-1] and used + size > max_tokens:
            out.append([])
            used = 0
        out[-1].append(m)
        used += size
    return [c for c in out if c]


def summariser_request(
    model: str,
    previous_summary: str | None,
    span: Sequence[Message],
    budget: int,
) -> dict[str, Any]:
    """The upstream request body that produces the new summary."""
    parts = []
    if previous_summary:
        parts.append("Previous summary:\n" + previous_summary)
    transcript = "\n".join(_render_message(m) for m in span)
    parts.append("New messages to fold in:\n" + transcript)
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM.replace("{budget}", str(budget))},
            {"role": "user", "content": redact("\n\n".join(parts))},
        ],
        "max_tokens": budget,
        "temperature": 0,
    }


def summary_from_response(response: dict[str, Any]) -> str:
    """The summary text of a summariser response, cleaned and redacted."""
    choices = response.get("choices") or [{}]
    content = (choices[0].get("message") or {}).get("content")
    if not isinstance(content, str) or not content.strip():
        raise ValueError("the summariser returned no text")
    text = content.strip().replace(BEGIN, "").replace(END, "").strip()
    return redact(text)


def frame(summary: str | None, ledger: Sequence[str]) -> str:
    """The block appended to the system prompt in the model's view."""
    parts = [BEGIN]
    if summary:
        parts.append(summary)
    if ledger:
        parts.append(
            "Exact identifiers from the earlier conversation:\n" + ledger_mod.render(ledger)
        )
    parts.append(END)
    return "\n\n".join(parts)


def span_text(span: Sequence[Message]) -> str:
    """All text of a span, for the ledger."""
    out = []
    for m in span:
        if isinstance(m.content, str):
            out.append(m.content)
        elif m.content is not None:
            out.append(orjson.dumps(m.content).decode())
        for call in m.tool_calls or ():
            out.append(str((call.get("function") or {}).get("arguments", "")))
    return redact("\n".join(out))
