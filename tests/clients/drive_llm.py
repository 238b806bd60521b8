"""simonw's `llm`, as a library, against Tether (run by tests/clients/test_clients.py; see
_drive.py). llm keeps each conversation itself and resends all of it on every prompt."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from _drive import City, Job, Stopwatch, serve, weather

# llm reads its models from this file in its user directory (`dirname "$(llm logs path)"`, or
# $LLM_USER_PATH); headers set there are sent with every prompt to that model.
MODELS_YAML = """\
- model_id: tether
  model_name: scripted
  api_base: http://127.0.0.1:8080/v1
  supports_tools: true
  supports_schema: true
  headers:
    X-Hermes-Session-Id: chat-42
"""
USER_DIR = Path(tempfile.mkdtemp(prefix="llm-user-"))
os.environ["LLM_USER_PATH"] = str(USER_DIR)  # before llm is imported

import llm  # noqa: E402


def get_weather(city: str) -> str:
    """The weather in a city."""
    return weather(city)


def connect(job: Job) -> llm.Model:
    """Write the model file for this job (its base URL, its id or none), then load the model."""
    text = MODELS_YAML.replace("http://127.0.0.1:8080/v1", job.base_url)
    if job.conversation:
        text = text.replace("chat-42", job.conversation)
    else:
        text = text.split("  headers:\n")[0]
    (USER_DIR / "extra-openai-models.yaml").write_text(text)
    return llm.get_model("tether")


def header(job: Job) -> dict[str, Any]:
    connect(job)
    # README begin
    conversation = llm.get_model("tether").conversation()
    # README end
    replies = []
    for prompt in job.prompts:
        # README begin
        response = conversation.prompt(prompt)  # llm resends the whole conversation itself
        print(response.text())
        # README end
        replies.append(response.text())
    return {"replies": replies}


def history(job: Job) -> dict[str, Any]:
    """No id: llm resends the whole conversation anyway."""
    return header(job)


def stream(job: Job) -> dict[str, Any]:
    """A streamed prompt (llm streams by default; the upstream pauses in it), then a next one."""
    conversation, watch = connect(job).conversation(), Stopwatch()
    first, *rest = job.prompts
    for piece in conversation.prompt(first):
        watch.piece(piece)
    replies = [watch.result()["text"]] + [conversation.prompt(p).text() for p in rest]
    return {"stream": watch.result(), "replies": replies}


def tools(job: Job) -> dict[str, Any]:
    """llm runs the tool loop itself (chain), re-encoding the tool calls it sends back."""
    conversation = connect(job).conversation(tools=[get_weather])
    return {"replies": [conversation.chain(prompt).text() for prompt in job.prompts]}


def structured(job: Job) -> dict[str, Any]:
    """A schema (response_format), then a next prompt in the same conversation."""
    conversation = connect(job).conversation()
    first, *rest = job.prompts
    replies: list[Any] = [json.loads(conversation.prompt(first, schema=City).text())]
    replies += [conversation.prompt(prompt).text() for prompt in rest]
    return {"replies": replies}


if __name__ == "__main__":
    serve(
        {
            "header": header,
            "history": history,
            "stream": stream,
            "tools": tools,
            "structured": structured,
        },
        ("llm",),
    )
