"""The OpenAI Agents SDK (openai-agents) against Tether, on its Chat Completions model (run by
tests/clients/test_clients.py; see _drive.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from _drive import API_KEY, MODEL, City, Job, Stopwatch, serve, weather
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    TResponseInputItem,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent

set_tracing_disabled(True)  # it would export traces to OpenAI's servers


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return weather(city)


def connect(job: Job) -> Agent:
    BASE_URL, HEADERS = job.base_url, job.headers
    # README begin
    client = AsyncOpenAI(base_url=BASE_URL, api_key=API_KEY, default_headers=HEADERS)
    agent = Agent(name="assistant", model=OpenAIChatCompletionsModel(MODEL, openai_client=client))
    # README end
    return agent


def header(job: Job) -> dict[str, Any]:
    """Only the new message each time: Tether keeps the history."""
    agent, replies = connect(job), []
    for prompt in job.prompts:
        # README begin
        result = Runner.run_sync(agent, prompt)  # only the new message: Tether keeps the history
        print(result.final_output)
        # README end
        replies.append(result.final_output)
    return {"replies": replies}


def run_with_history(agent: Agent, prompts: list[str]) -> list[Any]:
    """The agent's own history (to_input_list) each time."""
    replies: list[Any] = []
    items: list[TResponseInputItem] = []
    for prompt in prompts:
        result = Runner.run_sync(agent, [*items, {"role": "user", "content": prompt}])
        items = result.to_input_list()
        replies.append(result.final_output)
    return replies


def history(job: Job) -> dict[str, Any]:
    """The whole history each time, no id."""
    return {"replies": run_with_history(connect(job), job.prompts)}


async def streamed(agent: Agent, prompts: list[str]) -> dict[str, Any]:
    watch = Stopwatch()
    first, *rest = prompts
    result = Runner.run_streamed(agent, first)
    async for event in result.stream_events():
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
            watch.piece(event.data.delta)
    replies = [watch.result()["text"]] + [(await Runner.run(agent, p)).final_output for p in rest]
    return {"stream": watch.result(), "replies": replies}


def stream(job: Job) -> dict[str, Any]:
    """A streamed run (the upstream pauses in it), then a plain one, on one event loop (the
    client's connections belong to the loop that opened them)."""
    return asyncio.run(streamed(connect(job), job.prompts))


def tools(job: Job) -> dict[str, Any]:
    """The agent runs the tool loop; its history goes back each turn."""
    agent = connect(job).clone(tools=[get_weather])
    return {"replies": run_with_history(agent, job.prompts)}


def structured(job: Job) -> dict[str, Any]:
    """output_type (response_format on Chat Completions), then a next run by the header."""
    agent = connect(job)
    first, *rest = job.prompts
    output = Runner.run_sync(agent.clone(output_type=City), first).final_output
    replies: list[Any] = [output.model_dump()]
    replies += [Runner.run_sync(agent, prompt).final_output for prompt in rest]
    return {"replies": replies}


def responses(job: Job) -> dict[str, Any]:
    """On its Responses model (the SDK's default): the server keeps the chain. Each run goes
    on from the last response by previous_response_id, its tool loop included."""
    client = AsyncOpenAI(base_url=job.base_url, api_key=API_KEY)
    model = OpenAIResponsesModel(MODEL, openai_client=client)
    agent = Agent(name="assistant", model=model, tools=[get_weather])
    replies, last = [], None
    for prompt in job.prompts:
        result = Runner.run_sync(
            agent, prompt, previous_response_id=last, auto_previous_response_id=True
        )
        last = result.last_response_id
        replies.append(result.final_output)
    return {"replies": replies, "last_response_id": last}


if __name__ == "__main__":
    serve(
        {
            "header": header,
            "history": history,
            "stream": stream,
            "tools": tools,
            "structured": structured,
            "responses": responses,
        },
        ("openai-agents",),
    )
