"""The loop every client driver runs, in that client's own virtual environment.

A driver (``drive_<client>.py``) is started once per test module with the client's venv python
and reads jobs from stdin, one JSON object a line::

    {"scenario": "header", "base_url": "http://127.0.0.1:PORT/v1", "conversation": "c-1",
     "prompts": ["…", "…"]}

``conversation`` is the id to send as ``X-Hermes-Session-Id`` (null: send no id). For each job it
writes one JSON line on stdout: ``{"ok": true, …what the scenario returns…, "seconds": …}`` or
``{"ok": false, "error": "…", "traceback": "…"}``. It first writes ``{"ready": true, "versions":
{…}}``. Whatever the client library prints goes to stderr, so stdout carries only results.

One process per client, not one per scenario: importing some clients takes seconds (litellm ~5 s).
By hand: ``echo '{"scenario": "header", …}' | .venv-clients/openai/bin/python drive_openai.py``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

HEADER = "X-Hermes-Session-Id"
# the tool and the structured-output schema every driver offers its client
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


class City(BaseModel):
    city: str
    country: str


MODEL = "scripted"  # any name: Tether sends its default model upstream when it serves one
API_KEY = "anything-in-open-mode"


@dataclass
class Job:
    scenario: str
    base_url: str
    conversation: str | None = None
    prompts: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        """The conversation header, or none for an id-less client."""
        return {HEADER: self.conversation} if self.conversation else {}


def weather(city: str) -> str:
    """The tool every driver offers (as get_weather, in the client's own way)."""
    return f"sunny in {city}"


class Stopwatch:
    """The longest gap between two streamed text pieces, as the client delivered them."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.max_gap = 0.0
        self.pieces: list[str] = []

    def piece(self, text: str | None) -> None:
        if not text:
            return
        now = time.monotonic()
        if self.last is not None:
            self.max_gap = max(self.max_gap, now - self.last)
        self.last = now
        self.pieces.append(text)

    def result(self) -> dict[str, Any]:
        return {"text": "".join(self.pieces), "max_gap": self.max_gap, "pieces": len(self.pieces)}


Scenario = Callable[[Job], dict[str, Any]]


def serve(scenarios: dict[str, Scenario], packages: tuple[str, ...]) -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a client library printing something must not corrupt the results
    sys.stdout = sys.stderr
    versions = {p: importlib.metadata.version(p) for p in (*packages, "openai")}
    out.write(json.dumps({"ready": True, "versions": versions}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        job = Job(**json.loads(line))
        started = time.monotonic()
        try:
            scenario = scenarios.get(job.scenario)
            if scenario is None:
                result: dict[str, Any] = {"ok": False, "error": f"no scenario {job.scenario!r}"}
            else:
                result = {"ok": True, **scenario(job)}
        except Exception as exc:
            result = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        result["seconds"] = round(time.monotonic() - started, 3)
        out.write(json.dumps(result, default=str) + "\n")
