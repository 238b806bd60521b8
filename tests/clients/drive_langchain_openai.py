"""langchain-openai against Tether (run by tests/clients/test_clients.py; see _drive.py)."""

from __future__ import annotations

from typing import Any

from _drive import API_KEY, MODEL, City, Job, Stopwatch, serve, weather
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return weather(city)


def connect(job: Job) -> ChatOpenAI:
    BASE_URL, HEADERS = job.base_url, job.headers
    # README begin
    chat = ChatOpenAI(
        model=MODEL,
        base_url=BASE_URL,
        api_key=API_KEY,
        default_headers=HEADERS,
        include_response_headers=True,  # to read X-Tether-Conversation
    )
    # README end
    return chat


def conversation_id(message: BaseMessage) -> str | None:
    headers: dict[str, str] = message.response_metadata.get("headers") or {}
    return headers.get("x-tether-conversation")


def header(job: Job) -> dict[str, Any]:
    """Only the new message each time: Tether keeps the history."""
    chat, replies, ids = connect(job), [], []
    for prompt in job.prompts:
        # README begin
        reply = chat.invoke([HumanMessage(prompt)])
        print(reply.content, reply.response_metadata["headers"]["x-tether-conversation"])
        # README end
        replies.append(reply.content)
        ids.append(conversation_id(reply))
    return {"replies": replies, "conversation_ids": ids}


def history(job: Job) -> dict[str, Any]:
    """The whole history each time, no id."""
    chat, replies, ids = connect(job), [], []
    messages: list[BaseMessage] = []
    for prompt in job.prompts:
        messages.append(HumanMessage(prompt))
        reply = chat.invoke(messages)
        messages.append(reply)
        replies.append(reply.content)
        ids.append(conversation_id(reply))
    return {"replies": replies, "conversation_ids": ids}


def stream(job: Job) -> dict[str, Any]:
    """A streamed turn (the upstream pauses in it), then a plain one."""
    chat, watch = connect(job), Stopwatch()
    first, *rest = job.prompts
    for chunk in chat.stream([HumanMessage(first)]):
        watch.piece(chunk.text)
    replies: list[Any] = [watch.result()["text"]]
    replies += [chat.invoke([HumanMessage(prompt)]).content for prompt in rest]
    return {"stream": watch.result(), "replies": replies}


def tools(job: Job) -> dict[str, Any]:
    """A tool loop keeping its own history (langchain re-encodes the tool calls it sends back)."""
    chat, replies = connect(job).bind_tools([get_weather]), []
    messages: list[BaseMessage] = []
    for prompt in job.prompts:
        messages.append(HumanMessage(prompt))
        while True:
            reply = chat.invoke(messages)
            messages.append(reply)
            if not reply.tool_calls:
                replies.append(reply.content)
                break
            for call in reply.tool_calls:
                messages.append(get_weather.invoke(call))
    return {"replies": replies}


def structured(job: Job) -> dict[str, Any]:
    """Structured output (with_structured_output: response_format), then a next turn."""
    chat = connect(job)
    first, *rest = job.prompts
    output: Any = chat.with_structured_output(City).invoke([HumanMessage(first)])
    replies: list[Any] = [output.model_dump()]
    replies += [chat.invoke([HumanMessage(prompt)]).content for prompt in rest]
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
        ("langchain-openai", "langchain-core"),
    )
