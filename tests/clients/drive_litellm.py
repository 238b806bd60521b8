"""litellm as a client library (litellm.completion with api_base) against Tether (run by
tests/clients/test_clients.py; see _drive.py)."""

from __future__ import annotations

import json
import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else it fetches it at import

import litellm
from _drive import API_KEY, MODEL, TOOLS, City, Job, Stopwatch, serve, weather


def complete(job: Job, messages: list[Any], **kwargs: Any) -> Any:
    return litellm.completion(
        model=f"openai/{MODEL}",
        api_base=job.base_url,
        api_key=API_KEY,
        extra_headers=job.headers,
        messages=messages,
        **kwargs,
    )


def conversation_id(response: Any) -> str | None:
    """litellm keeps the response's extra fields, so the `tether` object is there."""
    return (getattr(response, "tether", None) or {}).get("conversation_id")


def header(job: Job) -> dict[str, Any]:
    """Only the new message each time: Tether keeps the history."""
    BASE_URL, HEADERS = job.base_url, job.headers
    replies, ids = [], []
    for prompt in job.prompts:
        # README begin
        response = litellm.completion(
            model=f"openai/{MODEL}",  # openai/: any OpenAI-compatible server
            api_base=BASE_URL,
            api_key=API_KEY,
            extra_headers=HEADERS,
            messages=[{"role": "user", "content": prompt}],
        )
        print(response.choices[0].message.content, response.tether["conversation_id"])
        # README end
        replies.append(response.choices[0].message.content)
        ids.append(conversation_id(response))
    return {"replies": replies, "conversation_ids": ids}


def history(job: Job) -> dict[str, Any]:
    """The whole history each time, no id."""
    replies, ids = [], []
    messages: list[Any] = []
    for prompt in job.prompts:
        messages.append({"role": "user", "content": prompt})
        response = complete(job, messages)
        messages.append({"role": "assistant", "content": response.choices[0].message.content})
        replies.append(response.choices[0].message.content)
        ids.append(conversation_id(response))
    return {"replies": replies, "conversation_ids": ids}


def stream(job: Job) -> dict[str, Any]:
    """A streamed turn (the upstream pauses in it), then a plain one."""
    watch = Stopwatch()
    first, *rest = job.prompts
    for chunk in complete(job, [{"role": "user", "content": first}], stream=True):
        if chunk.choices:
            watch.piece(chunk.choices[0].delta.content)
    replies = [watch.result()["text"]]
    for prompt in rest:
        replies.append(
            complete(job, [{"role": "user", "content": prompt}]).choices[0].message.content
        )
    return {"stream": watch.result(), "replies": replies}


def tools(job: Job) -> dict[str, Any]:
    """A tool loop keeping its own history (the message objects litellm returned, dumped)."""
    replies: list[Any] = []
    messages: list[Any] = []
    for prompt in job.prompts:
        messages.append({"role": "user", "content": prompt})
        while True:
            message = complete(job, messages, tools=TOOLS).choices[0].message
            messages.append(message.model_dump())
            if not message.tool_calls:
                replies.append(message.content)
                break
            for call in message.tool_calls:
                city = json.loads(call.function.arguments)["city"]
                messages.append({"role": "tool", "tool_call_id": call.id, "content": weather(city)})
    return {"replies": replies}


def structured(job: Job) -> dict[str, Any]:
    """response_format (a pydantic model), then a next turn by the header."""
    first, *rest = job.prompts
    response = complete(job, [{"role": "user", "content": first}], response_format=City)
    replies: list[Any] = [
        City.model_validate_json(response.choices[0].message.content).model_dump()
    ]
    for prompt in rest:
        replies.append(
            complete(job, [{"role": "user", "content": prompt}]).choices[0].message.content
        )
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
        ("litellm",),
    )
