"""Responses API items ↔ Chat Completions messages, both ways, in one place: the upstream stays
a Chat Completions server. A function call's `call_id` is the tool call's `id`; an item's own
`id` is derived from where it is stored (the turn and the message's seq), so the same item has
the same id every time it is read back."""

from __future__ import annotations

from typing import Any

from tether.errors import TetherError
from tether.model import Message

ROLES = ("user", "system", "developer", "assistant")


def _bad(message: str, param: str) -> TetherError:
    return TetherError(400, "invalid_request", message, param=param)


def _part(part: Any, where: str) -> dict[str, Any]:
    """An input content part → a Chat Completions content part."""
    if not isinstance(part, dict):
        raise _bad("a content part must be an object", where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise _bad("a text part needs a string `text`", where)
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _bad("input_image needs an `image_url` (a URL or a data: URL)", where)
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise _bad(f"unsupported content part type {kind!r}", where)


def _content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad("content must be a string or a list of parts", where)
    parts = [_part(p, f"{where}[{i}]") for i, p in enumerate(content)]
    if all(p["type"] == "text" for p in parts):  # plain text reads best upstream
        return "".join(p["text"] for p in parts)
    return parts


def _message_item(item: dict[str, Any], where: str) -> Message:
    role = item.get("role")
    if role not in ROLES:
        raise _bad(f"role must be one of {', '.join(ROLES)}", f"{where}.role")
    return Message(role=str(role), content=_content(item.get("content"), f"{where}.content"))


def _call_item(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise _bad("a function_call item needs `call_id` and `name`", where)
    arguments = item.get("arguments", "{}")
    if not isinstance(arguments, str):
        raise _bad("`arguments` is a JSON string", f"{where}.arguments")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):  # parts: their text
        return "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
    raise _bad("`output` is a string (or a list of text parts)", where)


def messages_from_input(value: Any, name: str = "input") -> list[Message]:
    """The request's `input` (a string, or a list of items; `name`: the field it came in) as
    the messages to append."""
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if not isinstance(value, list) or not value:
        raise _bad(f"{name} must be a string or a non-empty list of items", name)
    out: list[Message] = []
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise _bad("an input item must be an object", where)
        kind = item.get("type", "message")  # an item with a role and no type is a message
        if kind == "message":
            out.append(_message_item(item, where))
        elif kind == "function_call":  # the model's call, as a client echoes it back
            call = _call_item(item, where)
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and last.tool_calls is not None:
                last.tool_calls.append(call)
            else:
                out.append(Message(role="assistant", content=None, tool_calls=[call]))
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _bad("a function_call_output item needs `call_id`", where)
            text = _output_text(item.get("output"), f"{where}.output")
            out.append(Message(role="tool", content=text, tool_call_id=call_id))
        else:
            raise _bad(f"unsupported input item type {kind!r}", f"{where}.type")
    return out


def chat_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Function tools (`{"type": "function", "name", "parameters", …}`) in the Chat
    Completions shape; other tool types are refused (Tether runs only its own server tools)."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _bad("tools must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _bad("only function tools are supported", f"tools[{i}]")
        if not isinstance(tool.get("name"), str):
            raise _bad("a function tool needs a `name`", f"tools[{i}].name")
        fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
        out.append({"type": "function", "function": fn})
    return out


def chat_tool_choice(choice: Any) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice must be auto, none, required or a function", "tool_choice")


def chat_response_format(text: Any) -> dict[str, Any] | None:
    """`text.format` as the upstream's `response_format`."""
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _bad("text.format.type must be text, json_object or json_schema", "text.format")


def item_id(prefix: str, turn_id: str, index: int) -> str:
    """An output item's id: its response's turn and its place in the output (the same whether
    streamed, answered as JSON or read back)."""
    return f"{prefix}_{turn_id.removeprefix('turn_')}_{index}"


def output_items(
    messages: list[Message], turn_id: str, status: str = "completed"
) -> list[dict[str, Any]]:
    """The items a turn's assistant messages (and tool results) are, in order."""
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant":
            text = m.content if isinstance(m.content, str) else None
            if text:
                part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                items.append(
                    {
                        "type": "message",
                        "id": item_id("msg", turn_id, len(items)),
                        "status": status,
                        "role": "assistant",
                        "content": [part],
                    }
                )
            for call in m.tool_calls or ():
                fn = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "id": item_id("fc", turn_id, len(items)),
                        "call_id": call.get("id"),
                        "name": fn.get("name"),
                        "arguments": fn.get("arguments", ""),
                        "status": status,
                    }
                )
        elif m.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "id": item_id("fco", turn_id, len(items)),
                    "call_id": m.tool_call_id,
                    "output": m.content if isinstance(m.content, str) else "",
                    "status": "completed",
                }
            )
    return items


def input_items(messages: list[Message], turn_id: str) -> list[dict[str, Any]]:
    """Stored messages as input items (`GET /v1/responses/{id}/input_items`): messages with
    `input_text` parts (the assistant's with `output_text`), calls and their outputs."""
    found: list[dict[str, Any]] = []
    for m in messages:
        index = len(found)
        if m.role == "tool":
            found.append(
                {
                    "type": "function_call_output",
                    "id": item_id("in", turn_id, index),
                    "call_id": m.tool_call_id,
                    "output": m.content if isinstance(m.content, str) else "",
                    "status": "completed",
                }
            )
            continue
        kind = "output_text" if m.role == "assistant" else "input_text"
        text = m.content if isinstance(m.content, str) else None
        if isinstance(m.content, list):
            text = "".join(str(p.get("text", "")) for p in m.content if isinstance(p, dict))
        if text:
            part: dict[str, Any] = {"type": kind, "text": text}
            if kind == "output_text":
                part["annotations"] = []
            found.append(
                {
                    "type": "message",
                    "id": item_id("in", turn_id, index),
                    "status": "completed",
                    "role": m.role,
                    "content": [part],
                }
            )
        for call in m.tool_calls or ():
            fn = call.get("function") or {}
            found.append(
                {
                    "type": "function_call",
                    "id": item_id("in", turn_id, len(found)),
                    "call_id": call.get("id"),
                    "name": fn.get("name"),
                    "arguments": fn.get("arguments", ""),
                    "status": "completed",
                }
            )
    return found
