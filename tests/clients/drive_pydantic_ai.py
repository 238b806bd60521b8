"""pydantic-ai (pydantic-ai-slim[openai]) against Tether (run by tests/clients/test_clients.py;
see _drive.py)."""

from __future__ import annotations

from typing import Any

from _drive import API_KEY, MODEL, City, Job, Stopwatch, serve, weather
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider


def get_weather(city: str) -> str:
    """The weather in a city."""
    return weather(city)


def connect(job: Job) -> Agent:
    BASE_URL, HEADERS = job.base_url, job.headers
    # README begin
    client = AsyncOpenAI(base_url=BASE_URL, api_key=API_KEY, default_headers=HEADERS)
    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client))
    agent = Agent(model)
    # README end
    return agent


def header(job: Job) -> dict[str, Any]:
    """No message_history: Tether keeps the history."""
    agent, replies = connect(job), []
    for prompt in job.prompts:
        # README begin
        result = agent.run_sync(prompt)  # no message_history: Tether keeps it
        print(result.output)
        # README end
        replies.append(result.output)
    return {"replies": replies}


def history(job: Job) -> dict[str, Any]:
    """The agent's own history (message_history) each time, no id."""
    agent, replies = connect(job), []
    messages: list[ModelMessage] = []
    for prompt in job.prompts:
        result = agent.run_sync(prompt, message_history=messages)
        messages = result.all_messages()
        replies.append(result.output)
    return {"replies": replies}


def stream(job: Job) -> dict[str, Any]:
    """A streamed run (the upstream pauses in it), then a plain one."""
    agent, watch = connect(job), Stopwatch()
    first, *rest = job.prompts
    with agent.run_stream_sync(first) as result:
        for piece in result.stream_text(delta=True, debounce_by=None):
            watch.piece(piece)
    replies = [watch.result()["text"]] + [agent.run_sync(p).output for p in rest]
    return {"stream": watch.result(), "replies": replies}


def tools(job: Job) -> dict[str, Any]:
    """pydantic-ai runs the tool loop, re-encoding the tool calls it sends back (compact)."""
    agent, replies = connect(job), []
    agent.tool_plain(get_weather)
    messages: list[ModelMessage] = []
    for prompt in job.prompts:
        result = agent.run_sync(prompt, message_history=messages)
        messages = result.all_messages()
        replies.append(result.output)
    return {"replies": replies}


def structured(job: Job) -> dict[str, Any]:
    """output_type: a `final_result` tool call the agent never answers upstream; then a next
    run by the header alone, without the agent's history."""
    agent = connect(job)
    first, *rest = job.prompts
    replies: list[Any] = [agent.run_sync(first, output_type=City).output.model_dump()]
    replies += [agent.run_sync(prompt).output for prompt in rest]
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
        ("pydantic-ai-slim",),
    )
