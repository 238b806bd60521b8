"""The `openai` SDK against Tether (run by tests/clients/test_clients.py; see _drive.py)."""

from __future__ import annotations

import json
from typing import Any

from _drive import API_KEY, MODEL, TOOLS, City, Job, Stopwatch, serve, weather
from openai import OpenAI


def connect(job: Job) -> OpenAI:
    BASE_URL, HEADERS = job.base_url, job.headers
    # README begin
    client = OpenAI(base_url=BASE_URL, api_key=API_KEY, default_headers=HEADERS)
    # README end
    return client


def header(job: Job) -> dict[str, Any]:
    """Only the new message each time: Tether keeps the history."""
    client, replies, ids = connect(job), [], []
    for prompt in job.prompts:
        # README begin
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}]
        )
        print(reply.choices[0].message.content, reply.model_extra["tether"]["conversation_id"])
        # README end
        replies.append(reply.choices[0].message.content)
        ids.append(reply.model_extra["tether"]["conversation_id"])
    return {"replies": replies, "conversation_ids": ids}


def history(job: Job) -> dict[str, Any]:
    """The whole history each time, no id: the response names the conversation it ran on."""
    client, replies, ids = connect(job), [], []
    messages: list[Any] = []
    for prompt in job.prompts:
        messages.append({"role": "user", "content": prompt})
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
        reply = raw.parse()
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        replies.append(reply.choices[0].message.content)
        ids.append(raw.headers.get("x-tether-conversation"))
    return {"replies": replies, "conversation_ids": ids}


def stream(job: Job) -> dict[str, Any]:
    """A streamed turn (the upstream pauses in it), then a plain one."""
    client, watch, final = connect(job), Stopwatch(), None
    first, *rest = job.prompts
    for chunk in client.chat.completions.create(
        model=MODEL, stream=True, messages=[{"role": "user", "content": first}]
    ):
        if chunk.choices:
            watch.piece(chunk.choices[0].delta.content)
            if chunk.choices[0].finish_reason:
                final = (chunk.model_extra or {}).get("tether")
    replies = [watch.result()["text"]]
    for prompt in rest:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}]
        )
        replies.append(reply.choices[0].message.content)
    return {"stream": watch.result(), "replies": replies, "tether": final}


def tools(job: Job) -> dict[str, Any]:
    """A tool loop keeping its own history (the assistant's tool calls sent back as received)."""
    client, replies = connect(job), []
    messages: list[Any] = []
    for prompt in job.prompts:
        messages.append({"role": "user", "content": prompt})
        while True:
            reply = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
            message = reply.choices[0].message
            messages.append(message.model_dump(exclude_none=True))
            if not message.tool_calls:
                replies.append(message.content)
                break
            for call in message.tool_calls:
                city = json.loads(call.function.arguments)["city"]
                messages.append({"role": "tool", "tool_call_id": call.id, "content": weather(city)})
    return {"replies": replies}


def structured(job: Job) -> dict[str, Any]:
    """Structured output (response_format), then a next turn by the header."""
    client = connect(job)
    first, *rest = job.prompts
    parsed = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": first}], response_format=City
    )
    output = parsed.choices[0].message.parsed
    replies: list[Any] = [output.model_dump() if output else None]
    for prompt in rest:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}]
        )
        replies.append(reply.choices[0].message.content)
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
        ("openai",),
    )
