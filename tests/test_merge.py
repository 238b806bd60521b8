"""The merge rule (engine/merge.py) and the meaning of a message (engine/fingerprint.py): what a
resending client may change without forking, what still diverges, and trimmed histories."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.api.models import parse_message
from tether.engine.fingerprint import (
    EMPTY,
    SYNTHETIC,
    TOOL_ROUND,
    chain,
    prefix_hashes,
    raw_extends,
    raw_extends_fast,
    raw_prefix_hashes,
    same_message,
    shapes_of,
)
from tether.engine.incoming import Incoming
from tether.engine.merge import merge
from tether.errors import TetherError
from tether.model import Message


def call(args: str, call_id: str = "call_1", name: str = "weather") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def stored(*messages: Message) -> list[Message]:
    for seq, m in enumerate(messages, 1):
        m.seq = seq
    return list(messages)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # tool-call arguments re-encoded: whitespace (langchain-openai, llm) and back (pydantic-ai)
        (
            Message("assistant", None, [call('{"city":"Oslo"}')]),
            Message("assistant", None, [call('{"city": "Oslo"}')]),
        ),
        (
            Message("assistant", None, [call('{"city": "Oslo", "days": 3}')]),
            Message("assistant", None, [call('{"days":3,"city":"Oslo"}')]),
        ),
        # unicode escaped or not: the same string once parsed
        (
            Message("assistant", None, [call('{"city": "Tromsø"}')]),
            Message("assistant", None, [call('{"city": "Troms\\u00f8"}')]),
        ),
        # content as a string vs as one (or several) text parts
        (Message("user", "hello"), Message("user", [{"type": "text", "text": "hello"}])),
        (
            Message("user", "hello world"),
            Message(
                "user", [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]
            ),
        ),
        # absent vs null vs empty optional fields
        (Message("assistant", None, [call("{}")]), Message("assistant", "", [call("{}")])),
        (Message("user", "hi", tool_call_id=None), Message("user", "hi", tool_call_id="")),
        # names, extras and the call's `type` are not part of the meaning
        (Message("user", "hi", name="ann"), Message("user", "hi")),
        (
            Message("assistant", "ok", extra={"refusal": None, "annotations": []}),
            Message("assistant", "ok"),
        ),
        (
            Message("assistant", None, [call("{}")]),
            Message(
                "assistant",
                None,
                [{"id": "call_1", "function": {"name": "weather", "arguments": "{}"}}],
            ),
        ),
    ],
)
def test_equivalent_encodings_are_the_same_message(a: Message, b: Message) -> None:
    assert same_message(a, b) and same_message(b, a)
    assert chain(EMPTY, [a]) == chain(EMPTY, [b])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            Message("assistant", None, [call('{"city": "Oslo"}')]),
            Message("assistant", None, [call('{"city": "Bergen"}')]),
        ),
        (
            Message("assistant", None, [call('{"days": 3}')]),
            Message("assistant", None, [call('{"days": "3"}')]),
        ),
        (
            Message("assistant", None, [call('{"a": 1}')]),
            Message("assistant", None, [call('{"a": 1}', call_id="call_2")]),
        ),
        (
            Message("assistant", None, [call("{}")]),
            Message("assistant", None, [call("{}", name="other")]),
        ),
        (Message("user", "hello"), Message("user", "hello!")),
        (Message("user", "hello"), Message("assistant", "hello")),
        (Message("tool", "4", tool_call_id="a"), Message("tool", "4", tool_call_id="b")),
        (
            Message("user", [{"type": "image_url", "image_url": {"url": "x"}}]),
            Message("user", [{"type": "image_url", "image_url": {"url": "y"}}]),
        ),
        # not JSON: compared as text, exactly
        (
            Message("assistant", None, [call("{broken")]),
            Message("assistant", None, [call("{broken ")]),
        ),
    ],
)
def test_a_changed_value_still_diverges(a: Message, b: Message) -> None:
    assert not same_message(a, b)
    assert chain(EMPTY, [a]) != chain(EMPTY, [b])


def test_a_reencoded_tool_round_trip_appends_instead_of_forking() -> None:
    history = stored(
        Message("user", "weather in Oslo?"),
        Message("assistant", None, [call('{"city":"Oslo"}')]),
        Message("tool", "sunny", tool_call_id="call_1"),
        Message("assistant", "It is sunny."),
    )
    request = [
        Message("system", "be brief"),
        Message("user", [{"type": "text", "text": "weather in Oslo?"}]),
        Message("assistant", "", [call('{"city": "Oslo"}')]),
        Message("tool", "sunny", tool_call_id="call_1"),
        Message("assistant", "It is sunny."),
        Message("user", "and tomorrow?"),
    ]
    plan = merge(history, "be brief", request)
    assert plan.fork_seq is None
    assert [m.content for m in plan.new] == ["and tomorrow?"]
    assert plan.matched == 4


def test_stored_messages_stay_exactly_as_received() -> None:
    request = [Message("user", "hi"), Message("assistant", None, [call('{"city":  "Oslo"}')])]
    request.append(Message("tool", "x", tool_call_id="call_1"))
    plan = merge([], None, request, "replay")
    assert plan.new[1].tool_calls == [call('{"city":  "Oslo"}')]


def test_an_edit_forks_at_the_last_shared_message() -> None:
    history = stored(
        Message("user", "one"),
        Message("assistant", "echo one"),
        Message("user", "two"),
        Message("assistant", "echo two"),
    )
    request = [Message("user", "one"), Message("assistant", "echo one"), Message("user", "TWO")]
    plan = merge(history, None, request)
    assert plan.fork_seq == 2
    assert [m.content for m in plan.history] == ["one", "echo one"]
    assert [m.content for m in plan.new] == ["TWO"]


def test_a_history_trimmed_at_its_start_still_extends_the_transcript() -> None:
    history = stored(
        *(Message(role, f"{role} {i}") for i in range(1, 6) for role in ("user", "assistant"))
    )
    request = [Message(m.role, m.content) for m in history[4:]] + [Message("user", "new")]
    plan = merge(history, None, request)
    assert plan.fork_seq is None
    assert [m.content for m in plan.new] == ["new"]
    # trimmed and edited: a fork (at the start, nothing shared)
    edited = [*request[:-2], Message("assistant", "changed"), Message("user", "new")]
    assert merge(history, None, edited).fork_seq is not None


def test_tethers_own_tool_results_are_stepped_over() -> None:
    closed = Message(
        "tool", "no result", tool_call_id="call_1", extra={SYNTHETIC: "dangling_tool_call"}
    )
    history = stored(
        Message("user", "q"),
        Message("assistant", None, [call("{}")]),
        closed,
        Message("user", "next"),
        Message("assistant", "answer"),
    )
    request = [
        Message("user", "q"),
        Message("assistant", None, [call("{}")]),
        Message("user", "next"),
        Message("assistant", "answer"),
        Message("user", "more"),
    ]
    plan = merge(history, None, request)
    assert plan.fork_seq is None and [m.content for m in plan.new] == ["more"]
    # the transcript's hash leaves it out too, so the request's prefix hash finds it
    hashes = prefix_hashes([m for m in request])
    assert chain(EMPTY, history) == hashes[4]


def test_server_tool_rounds_the_client_never_saw_are_stepped_over() -> None:
    round1 = {TOOL_ROUND: 1}
    history = stored(
        Message("user", "what time is it?"),
        Message("assistant", None, [call("{}", "c1", "current_time")], extra=round1),
        Message("tool", "2026-12-02T20:00:00+00:00", tool_call_id="c1", extra=round1),
        Message("assistant", "It is eight."),
    )
    request = [  # what a full-history client holds: the question and the answer
        Message("user", "what time is it?"),
        Message("assistant", "It is eight."),
        Message("user", "thanks"),
    ]
    plan = merge(history, None, request)
    assert plan.fork_seq is None and [m.content for m in plan.new] == ["thanks"]
    assert chain(EMPTY, history) == prefix_hashes(request)[2]  # the hash steps over them too


def test_a_request_adding_nothing_is_refused() -> None:
    history = stored(Message("user", "one"), Message("assistant", "echo one"))
    with pytest.raises(TetherError) as exc:
        merge(history, None, [Message("user", "one"), Message("assistant", "echo one")])
    assert exc.value.code == "no_new_messages"


def test_known_extension_needs_only_the_visible_tail() -> None:
    tail = stored(Message("user", "one"), Message("assistant", "echo one"))
    request = [
        Message("user", "zero"),
        Message("assistant", "echo zero"),
        Message("user", "one"),
        Message("assistant", "echo one"),
        Message("user", "two"),
    ]
    plan = merge(tail, None, request, extends=4)
    assert plan.fork_seq is None and [m.content for m in plan.new] == ["two"]


# -- the transcript hash straight from the request's JSON ---------------------------------------

_VALUES: list[Any] = [None, "", "x", 3, [], [{"type": "text", "text": "hi"}], {"a": 1}, ["s"]]
_CALLS: list[Any] = [
    None,
    [],
    [call('{"a": 1}')],
    [call("not json")],
    [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
    [{"id": 3, "function": {"name": "f", "arguments": "{}"}}],
    [{"id": "c", "type": None, "function": {"name": "f", "arguments": "{}"}}],
    [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
    ["not a call"],
]


@given(
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "tool", "system", "function", 7])},
            optional={
                "content": st.sampled_from([*_VALUES, "x", "hi"]),
                "tool_calls": st.sampled_from(_CALLS),
                "tool_call_id": st.sampled_from([None, "", "call_1", 5]),
                "name": st.sampled_from([None, "ann", 1]),
                "extra": st.just({"any": "thing"}),
            },
        ),
        max_size=6,
    )
)
def test_the_raw_hash_equals_the_parsed_one_and_exists_only_for_valid_messages(
    raw: list[dict[str, Any]],
) -> None:
    incoming = Incoming(raw, lambda m, i: parse_message(m, i, 10_000))
    try:
        parsed = list(incoming)
    except TetherError:
        parsed = None
    history = [m for m in raw if m.get("role") not in ("system", "developer")]
    hashes = raw_prefix_hashes(raw, incoming.roles)
    if parsed is None:
        # an invalid instruction message is not hashed (it is parsed anyway); any other is
        bad_history = any(_invalid(m) for m in history)
        assert (hashes is None) == bad_history
        if bad_history:  # never taken as the stored transcript either
            first_bad = next(i for i, m in enumerate(history) if _invalid(m))
            stand_in = [Message("user", "x")] * (first_bad + 1)
            assert not raw_extends(raw, stand_in)
            assert not raw_extends_fast(raw, incoming.roles, shapes_of(stand_in), stand_in)
        return
    history_parsed = [m for m in parsed if m.role not in ("system", "developer")]
    assert hashes == prefix_hashes(history_parsed)
    # the direct comparison with a cached transcript agrees, and a changed message is caught
    assert raw_extends(raw, history_parsed)
    assert raw_extends_fast(raw, incoming.roles, shapes_of(history_parsed), history_parsed)
    if history_parsed:
        changed = [*history_parsed[:-1], Message("user", "something else entirely")]
        assert not raw_extends(raw, changed)
        assert not raw_extends_fast(raw, incoming.roles, shapes_of(changed), changed)


def _invalid(raw: dict[str, Any]) -> bool:
    try:
        parse_message(raw, 0, 10_000)
    except TetherError:
        return True
    return False
