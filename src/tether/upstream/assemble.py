"""Rebuild the assistant message from a Chat Completions upstream's streamed chunks (content,
tool-call deltas, usage), and say what each chunk added."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Assembled:
    content: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    extra_text: dict[str, list[str]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    chunk_id: str | None = None
    created: int | None = None

    def add(self, data: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
        """Take in one chunk; return the text and the tool-call deltas it added (choice 0)."""
        text = ""
        calls: list[dict[str, Any]] | None = None
        self.chunk_id = self.chunk_id or data.get("id")
        self.model = self.model or data.get("model")
        self.created = self.created or data.get("created")
        if data.get("usage"):
            self.usage = data["usage"]
        for choice in data.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text = delta["content"]
                self.content.append(text)
            for key in ("reasoning_content", "reasoning", "refusal"):
                if isinstance(delta.get(key), str):
                    self.extra_text.setdefault(key, []).append(delta[key])
            calls = delta.get("tool_calls") or None
            for call in calls or ():
                slot = self.tool_calls.setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                fn = call.get("function") or {}
                if fn.get("name"):
                    slot["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    slot["function"]["arguments"] += fn["arguments"]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return text, calls

    def message(self) -> dict[str, Any]:
        """The assistant message in OpenAI form."""
        out: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.tool_calls:
            out["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        elif out["content"] is None:
            out["content"] = ""
        for key, parts in self.extra_text.items():
            out[key] = "".join(parts)
        return out
