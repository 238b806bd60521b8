"""Property tests for where compaction cuts a conversation, the view derived from a checkpoint,
and the cheap prune stage (tether.compaction.cut / tether.compaction.view)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from tether.compaction.cut import (
    STUB_OVER_CHARS,
    choose_tail_start,
    group_starts,
    prune,
)
from tether.compaction.policy import Budget
from tether.compaction.summary import BEGIN, END
from tether.compaction.tokens import count_message, count_text
from tether.compaction.view import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    estimate,
    render,
    system_block,
    tail_messages,
)
from tether.engine.validate import pending_after, validate_sequence
from tether.errors import TetherError
from tether.model import Checkpoint, Message
from tether.upstream.wire import chat_message

SUMMARY = "## Goal\nShip the release.\n## Open tasks\n- fix the flaky test"
LEDGER = ["https://example.com/a/b?x=1", "JIRA-1234", "order_8812"]

PROPS = settings(  # hypothesis's 100 examples (10 in the fast run: tests/conftest.py)
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# ---------------------------------------------------------------------------------------------
# Strategy: random valid conversations
# ---------------------------------------------------------------------------------------------

WORDS = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")),
    min_size=1,
    max_size=40,
)
FUNCTION_NAMES = st.sampled_from(
    ["read_file", "run_shell", "search", "http_get", "write_file", "list_directory_entries"]
)


@st.composite
def texts(draw: st.DrawFn, max_len: int = 1200) -> str:
    """Text of a random length (sometimes well over the 200-char stub threshold)."""
    seed = draw(WORDS)
    length = draw(
        st.one_of(
            st.integers(0, 120),
            st.integers(150, 260),  # around the stub threshold
            st.integers(0, max_len),
        )
    )
    return (seed + " ") * (length // (len(seed) + 1)) + seed[: length % (len(seed) + 1)]


@st.composite
def arguments(draw: st.DrawFn) -> str:
    """Valid JSON tool-call arguments, sometimes with long string values (nested too)."""
    value: dict[str, Any] = {
        "path": draw(texts(max_len=400)),
        "limit": draw(st.integers(-(2**53), 2**53)),
        "flag": draw(st.booleans()),
    }
    if draw(st.booleans()):
        value["nested"] = {
            "items": draw(st.lists(texts(max_len=400), max_size=3)),
            "ratio": draw(st.floats(allow_nan=False, allow_infinity=False)),
            "none": None,
        }
    indent = draw(st.booleans())
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode()


@st.composite
def tokens(draw: st.DrawFn) -> int:
    """Usually 1..500; occasionally a giant message."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.integers(5_000, 200_000))
    return draw(st.integers(1, 500))


@dataclass
class _Ids:
    n: int = 0

    def next(self) -> str:
        self.n += 1
        return f"call_{self.n}"


@st.composite
def conversations(draw: st.DrawFn, max_turns: int = 8) -> list[Message]:
    """Turns of: user, then 0+ tool rounds (assistant with 1-3 calls, one `tool` result per call
    in order), then optionally a final assistant reply. Seqs are 1..n."""
    ids = _Ids()
    raw: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, max_turns))):
        raw.append({"role": "user", "content": draw(texts())})
        for _ in range(draw(st.integers(0, 3))):
            calls = [
                {
                    "id": ids.next(),
                    "type": "function",
                    "function": {"name": draw(FUNCTION_NAMES), "arguments": draw(arguments())},
                }
                for _ in range(draw(st.integers(1, 3)))
            ]
            content = draw(st.one_of(st.none(), texts(max_len=100)))
            raw.append({"role": "assistant", "content": content, "tool_calls": calls})
            for call in calls:
                giant = draw(st.integers(0, 14)) == 0
                output = draw(texts(max_len=3000)) * (20 if giant else 1)
                raw.append({"role": "tool", "content": output, "tool_call_id": call["id"]})
        if draw(st.booleans()):
            raw.append({"role": "assistant", "content": draw(texts())})
    return [Message(**m, tokens=draw(tokens()), seq=i) for i, m in enumerate(raw, start=1)]


budgets = st.integers(1, 5000)
min_messages = st.integers(1, 12)


def checkpoint_for(messages: list[Message], tail_start: int, prune_through: int | None = None):
    covers = messages[tail_start - 1].seq if tail_start > 0 else 0
    return Checkpoint(
        epoch=1,
        covers_through_seq=covers,
        prune_through_seq=covers if prune_through is None else prune_through,
        summary=SUMMARY,
        ledger=list(LEDGER),
        tokens_before=0,
        tokens_after=0,
        model=None,
        prompt_version="test",
        stats={},
    )


def call_ids(m: Message) -> list[str]:
    return [str(c["id"]) for c in m.tool_calls or ()]


def string_values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in string_values(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in string_values(v)]
    return []


# ---------------------------------------------------------------------------------------------
# The generator itself
# ---------------------------------------------------------------------------------------------


@PROPS
@given(conversations())
def test_generated_conversations_are_valid(messages: list[Message]) -> None:
    validate_sequence([chat_message(m) for m in messages])
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
    assert messages[0].role == "user"
    ids = [i for m in messages for i in call_ids(m)]
    assert len(ids) == len(set(ids))
    answered = [m.tool_call_id for m in messages if m.role == "tool"]
    assert answered == ids  # every call answered exactly once, in order
    assert all(m.tokens >= 1 for m in messages)


@PROPS
@given(conversations(), st.data())
def test_pending_after_reads_the_end_of_any_valid_prefix(
    messages: list[Message], data: st.DataObject
) -> None:
    """The engine checks only a turn's new messages against `pending_after(stored view)`: that
    must equal validating the whole sequence, for every valid prefix (calls half answered too)."""
    cut = data.draw(st.integers(0, len(messages)))
    prefix = [chat_message(m) for m in messages[:cut]]
    assert pending_after(prefix) == validate_sequence(prefix)


def test_validator_rejects_what_the_generator_must_not_produce() -> None:
    """The validator used as the oracle really catches broken pairing."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with pytest.raises(TetherError):
        validate_sequence(
            [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c1"}]
        )
    with pytest.raises(TetherError):
        validate_sequence(
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "user", "content": "y"},
            ]
        )


# ---------------------------------------------------------------------------------------------
# Properties of the cut
# ---------------------------------------------------------------------------------------------


@PROPS
@given(conversations(), budgets, min_messages)
def test_cut_is_on_a_group_boundary_and_never_splits_tool_calls(
    messages: list[Message], budget: int, min_msgs: int
) -> None:
    start = choose_tail_start(messages, budget, min_msgs)
    assert 0 <= start < len(messages)
    assert start in group_starts(messages)
    assert messages[start].role != "tool"
    position = {m.tool_call_id: i for i, m in enumerate(messages) if m.role == "tool"}
    for i, m in enumerate(messages):
        if m.tool_calls:
            sides = {i >= start} | {position[cid] >= start for cid in call_ids(m)}
            assert len(sides) == 1, (i, start)


@PROPS
@given(conversations(), budgets, min_messages)
def test_tail_holds_the_last_user_and_last_assistant_message(
    messages: list[Message], budget: int, min_msgs: int
) -> None:
    start = choose_tail_start(messages, budget, min_msgs)
    tail = messages[start:]
    last_user = max(m.seq for m in messages if m.role == "user")
    assert last_user in {m.seq for m in tail}
    assistants = [m.seq for m in messages if m.role == "assistant"]
    if assistants:
        assert max(assistants) in {m.seq for m in tail}
    assert tail[-1] is messages[-1]


@PROPS
@given(conversations(), budgets, min_messages)
def test_covered_range_and_view_account_for_every_message_once(
    messages: list[Message], budget: int, min_msgs: int
) -> None:
    start = choose_tail_start(messages, budget, min_msgs)
    checkpoint = checkpoint_for(messages, start)
    covered = [m.seq for m in messages if m.seq <= checkpoint.covers_through_seq]
    view = [m.seq for m in tail_messages(messages, checkpoint)]
    assert sorted(covered + view) == [m.seq for m in messages]
    assert len(set(covered + view)) == len(messages)
    assert view == [m.seq for m in messages[start:]]
    # with prune_through == covers nothing is stubbed: the view is the stored tail verbatim
    assert tail_messages(messages, checkpoint) == messages[start:]


@PROPS
@given(conversations(), budgets, min_messages, st.integers(0, 3))
def test_rendered_view_is_a_valid_sequence(
    messages: list[Message], budget: int, min_msgs: int, extra_prune: int
) -> None:
    validate_sequence([chat_message(m) for m in messages])  # the generator's promise
    start = choose_tail_start(messages, budget, min_msgs)
    checkpoint = checkpoint_for(messages, start)
    system = system_block("sys", checkpoint)
    view = render(system, tail_messages(messages, checkpoint))
    validate_sequence(view)
    assert view[0]["role"] == "system"
    assert system is not None and system.startswith("sys\n\n")
    assert BEGIN in system and END in system and SUMMARY in system
    assert all(item in system for item in LEDGER)
    assert view[1]["role"] != "tool"
    # pruning deeper than the summary covers changes contents, never the sequence's validity
    covers = checkpoint.covers_through_seq
    deeper = checkpoint_for(messages, start, prune_through=min(len(messages), covers + extra_prune))
    validate_sequence(render(system_block("sys", deeper), tail_messages(messages, deeper)))


@PROPS
@given(conversations(), budgets, min_messages)
def test_estimate_of_the_view(messages: list[Message], budget: int, min_msgs: int) -> None:
    start = choose_tail_start(messages, budget, min_msgs)
    checkpoint = checkpoint_for(messages, start)
    system = system_block("sys", checkpoint)
    kept = tail_messages(messages, checkpoint)
    assert system is not None
    assert estimate(system, kept) == (
        REPLY_PRIMING + sum(m.tokens for m in kept) + MESSAGE_OVERHEAD + count_text(system)
    )
    assert estimate(None, kept) == REPLY_PRIMING + sum(m.tokens for m in kept)


@PROPS
@given(conversations(), min_messages, st.integers(0, 1000))
def test_budget_that_holds_everything_cuts_nothing(
    messages: list[Message], min_msgs: int, slack: int
) -> None:
    total = sum(m.tokens for m in messages)
    assert choose_tail_start(messages, total + slack, min_msgs) == 0


@PROPS
@given(conversations(), budgets, budgets, min_messages, min_messages)
def test_more_budget_or_more_min_messages_never_keeps_less(
    messages: list[Message], b1: int, b2: int, m1: int, m2: int
) -> None:
    small_b, big_b = sorted((b1, b2))
    small_m, big_m = sorted((m1, m2))
    assert choose_tail_start(messages, big_b, small_m) <= choose_tail_start(
        messages, small_b, small_m
    )
    assert choose_tail_start(messages, small_b, big_m) <= choose_tail_start(
        messages, small_b, small_m
    )


@PROPS
@given(conversations(), budgets, min_messages)
def test_tail_opens_with_a_user_message_when_it_can(
    messages: list[Message], budget: int, min_msgs: int
) -> None:
    """The tail opens with a user message unless none lies between its start and the last user
    message / last assistant message (whichever comes first)."""
    start = choose_tail_start(messages, budget, min_msgs)
    last = [
        max(i for i, m in enumerate(messages) if m.role == r)
        for r in ("user", "assistant")
        if any(m.role == r for m in messages)
    ]
    bound = min(last)
    if messages[start].role != "user":
        assert all(m.role != "user" for m in messages[start : bound + 1])


@PROPS
@given(conversations(), budgets, min_messages)
def test_the_previous_turn_did_not_fit(messages: list[Message], budget: int, min_msgs: int) -> None:
    """Extending the tail back to the previous user message would break both the budget and the
    min-messages/soft-ceiling allowance: the tail is not needlessly short."""
    start = choose_tail_start(messages, budget, min_msgs)
    users_before = [i for i, m in enumerate(messages[:start]) if m.role == "user"]
    assume(users_before)
    prev = users_before[-1]
    extended = sum(m.tokens for m in messages[prev:])
    assert extended > budget
    assert len(messages) - prev - 1 >= min_msgs or extended > 1.5 * budget


# ---------------------------------------------------------------------------------------------
# choose_tail_start: examples
# ---------------------------------------------------------------------------------------------


def _msgs(*spec: tuple[str, int]) -> list[Message]:
    """Plain messages (no tool calls) from (role, tokens)."""
    return [
        Message(role, content=f"{role} {i}", tokens=t, seq=i)
        for i, (role, t) in enumerate(spec, start=1)
    ]


def test_choose_tail_start_of_nothing_is_zero() -> None:
    assert choose_tail_start([], 100) == 0
    assert choose_tail_start([], 1, min_messages=1) == 0


def test_single_message_is_always_kept() -> None:
    for tokens_ in (1, 100, 10**6):
        assert choose_tail_start(_msgs(("user", tokens_)), 1, min_messages=1) == 0


def test_last_group_bigger_than_the_budget_is_still_kept() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}
    messages = [
        *_msgs(("user", 10), ("assistant", 10), ("user", 10)),
        Message("assistant", None, tool_calls=[call], tokens=10, seq=4),
        Message("tool", "x" * 5000, tool_call_id="c1", tokens=5000, seq=5),
    ]
    start = choose_tail_start(messages, 100, min_messages=8)
    # the tool group (4, 5) is kept whole; the user message before it because it is the last one
    assert start == 2
    assert [m.seq for m in messages[start:]] == [3, 4, 5]


def test_huge_last_reply_pulls_in_the_last_user_message() -> None:
    messages = _msgs(("user", 5), ("assistant", 5), ("user", 5), ("assistant", 10_000))
    assert choose_tail_start(messages, 10, min_messages=1) == 2


def test_budget_is_respected_when_min_messages_is_met() -> None:
    messages = _msgs(*[("user", 10), ("assistant", 10)] * 5)  # 10 messages of 10 tokens
    assert choose_tail_start(messages, 40, min_messages=1) == 6  # 4 messages = 40 tokens
    # 3 messages (30 tokens) would open with an assistant reply: trimmed to the last turn
    assert choose_tail_start(messages, 39, min_messages=1) == 8
    assert choose_tail_start(messages, 30, min_messages=1) == 8


def test_tail_may_open_with_an_assistant_reply_when_the_last_user_message_comes_after() -> None:
    messages = _msgs(("user", 10), ("assistant", 10), ("user", 10), ("assistant", 10), ("user", 10))
    # 25 tokens hold the last two messages; no user message lies between them and the last reply
    assert choose_tail_start(messages, 25, min_messages=1) == 3


def test_min_messages_may_go_over_the_budget_up_to_the_soft_ceiling() -> None:
    messages = _msgs(*[("user", 10), ("assistant", 10)] * 5)
    # budget 40 alone keeps 4; min 6 allows up to 1.5 × 40 = 60 tokens, i.e. 6 messages
    assert choose_tail_start(messages, 40, min_messages=6) == 4
    # but never past the soft ceiling, whatever min_messages says
    assert choose_tail_start(messages, 40, min_messages=100) == 4
    assert choose_tail_start(messages, 40, min_messages=6, soft_ceiling=1.0) == 6


def test_tail_never_starts_with_a_tool_result() -> None:
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        for i in range(3)
    ]
    messages = [
        Message("user", "go", tokens=1, seq=1),
        Message("assistant", None, tool_calls=calls, tokens=1, seq=2),
        *[Message("tool", "r" * 10, tool_call_id=f"c{i}", tokens=100, seq=3 + i) for i in range(3)],
        Message("assistant", "done", tokens=1, seq=6),
        Message("user", "next", tokens=1, seq=7),
        Message("assistant", "ok", tokens=1, seq=8),
    ]
    assert group_starts(messages) == [0, 1, 5, 6, 7]
    # budgets that would fit one or two tool results: the group is taken whole or not at all,
    # and a tail that would open with an assistant message is trimmed to the next user message
    starts = {b: choose_tail_start(messages, b, min_messages=1) for b in range(1, 400)}
    assert set(starts.values()) == {0, 6}
    assert starts[304] == 6 and starts[305] == 0


def test_budget_dataclass_feeds_choose_tail_start() -> None:
    budget = Budget(window=10_000, reserved=2_000, threshold=0.8, tail_ratio=0.25)
    assert budget.usable == 8000 and budget.limit == 6400 and budget.tail_tokens == 1600
    messages = _msgs(*[("user", 200), ("assistant", 200)] * 10)
    start = choose_tail_start(messages, budget.tail_tokens, min_messages=1)
    assert start == 20 - 8  # 8 × 200 = 1600 tokens
    assert sum(m.tokens for m in messages[start:]) <= budget.tail_tokens


# ---------------------------------------------------------------------------------------------
# prune
# ---------------------------------------------------------------------------------------------


@PROPS
@given(conversations(), st.data())
def test_prune(messages: list[Message], data: st.DataObject) -> None:
    through = data.draw(st.integers(0, len(messages) + 1))
    pruned = prune(messages, through)
    assert len(pruned) == len(messages)
    for before, after in zip(messages, pruned, strict=True):
        assert (after.seq, after.role, after.tool_call_id) == (
            before.seq,
            before.role,
            before.tool_call_id,
        )
        assert call_ids(after) == call_ids(before)
        if (
            before.seq > through
            or before.role == "user"
            or (before.role == "assistant" and not before.tool_calls)
        ):
            assert after == before
            continue
        if before.role == "tool":
            if len(before.content) > STUB_OVER_CHARS:
                assert len(after.content) < STUB_OVER_CHARS, after.content
                assert "elided by compaction" in after.content
                assert f"{len(before.content):,} chars" in after.content
                assert after.tokens == count_message(chat_message(after))
            else:
                assert after == before
            continue
        # an assistant message with tool calls: arguments stay valid JSON, long strings shortened
        assert after.content == before.content
        for call_before, call_after in zip(before.tool_calls, after.tool_calls, strict=True):
            assert call_after["function"]["name"] == call_before["function"]["name"]
            old = orjson.loads(call_before["function"]["arguments"])
            new = orjson.loads(call_after["function"]["arguments"])
            assert set(new) == set(old)
            for s_old, s_new in zip(string_values(old), string_values(new), strict=True):
                if len(s_old) <= 200:
                    assert s_new == s_old
                else:
                    assert s_new.startswith(s_old[:150])
                    assert len(s_new) < len(s_old) or len(s_old) < 230
                    assert f"[{len(s_old):,} chars]" in s_new
            assert new["limit"] == old["limit"] and new["flag"] == old["flag"]
        if after != before:
            assert after.tokens == count_message(chat_message(after))


@PROPS
@given(conversations(), st.data())
def test_prune_is_idempotent_for_tool_outputs(messages: list[Message], data: st.DataObject) -> None:
    through = data.draw(st.integers(0, len(messages) + 1))
    once = prune(messages, through)
    twice = prune(once, through)
    assert [(m.seq, m.role, m.content, m.tokens) for m in twice if m.role == "tool"] == [
        (m.seq, m.role, m.content, m.tokens) for m in once if m.role == "tool"
    ]
    long_args = any(
        len(s) > 200
        for m in messages
        for c in m.tool_calls or ()
        for s in string_values(orjson.loads(c["function"]["arguments"]))
    )
    if not long_args:
        assert twice == once


ARG_BUG = (
    "prune is not idempotent for tool-call arguments: a string value over 200 chars becomes "
    "v[:200] + '… [N chars]', which is itself over 200 chars, so a second prune (compact() "
    "prunes the already-pruned view) rewrites the marker to the shortened length"
)


@settings(PROPS, phases=[Phase.explicit, Phase.generate])  # no shrinking: it is known to fail
@given(conversations(), st.data())
def test_prune_is_idempotent(messages: list[Message], data: st.DataObject) -> None:
    through = data.draw(st.integers(0, len(messages) + 1))
    once = prune(messages, through)
    assert prune(once, through) == once


def test_prune_twice_keeps_the_original_length_marker() -> None:
    args = orjson.dumps({"code": "x" * 1000}).decode()
    call = {"id": "c1", "type": "function", "function": {"name": "write", "arguments": args}}
    messages = [
        Message("user", "write it", tokens=3, seq=1),
        Message("assistant", None, tool_calls=[call], tokens=300, seq=2),
        Message("tool", "ok", tool_call_id="c1", tokens=2, seq=3),
    ]
    once = prune(messages, 3)
    assert orjson.loads(once[1].tool_calls[0]["function"]["arguments"])["code"].endswith(
        "… [1,000 chars]"
    )
    twice = prune(once, 3)
    # got: "xxx…xxx… [215 chars]"
    assert twice == once


def test_prune_stub_names_the_tool_and_is_short() -> None:
    call = {"id": "c9", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
    output = "line one\n\tline two   " + "y" * 5000
    messages = [
        Message("user", "read it", tokens=3, seq=1),
        Message("assistant", None, tool_calls=[call], tokens=10, seq=2),
        Message("tool", output, tool_call_id="c9", tokens=1500, seq=3),
        Message("tool", "z" * 5000, tool_call_id="unknown", tokens=1500, seq=4),
    ]
    pruned = prune(messages, 4)
    stub = pruned[2].content
    assert stub.startswith(f"[read_file output, {len(output):,} chars, elided by compaction] ")
    assert "line one line two y" in stub  # whitespace collapsed
    assert len(stub) < STUB_OVER_CHARS
    assert pruned[2].tokens == count_message(chat_message(pruned[2])) < 1500
    assert pruned[3].content.startswith("[tool output, 5,000 chars")
    # a 200-char output is not stubbed, a 201-char one is
    edge = [Message("tool", "a" * n, tool_call_id="c9", seq=n) for n in (200, 201)]
    assert [m.content == "a" * 200 for m in prune(edge, 1000)] == [True, False]


def test_prune_keeps_non_json_arguments_as_text() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "not json"}}
    messages = [Message("assistant", None, tool_calls=[call], tokens=5, seq=1)]
    assert prune(messages, 1) == messages


def test_prune_stub_of_list_content_is_readable_text() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}
    parts = [{"type": "text", "text": "héllo wörld " * 40}]
    messages = [
        Message("assistant", None, tool_calls=[call], tokens=5, seq=1),
        Message("tool", parts, tool_call_id="c1", tokens=200, seq=2),
    ]
    stub = prune(messages, 2)[1].content
    assert len(stub) < STUB_OVER_CHARS
    # got: "[read output, 527 chars, elided by compaction] b'[{"type":"text","text":"h\xc3\xa9llo…"
    assert "b'" not in stub and "\\x" not in stub


def test_prune_keeps_valid_json_arguments_valid() -> None:
    import json

    args = json.dumps({"text": "\ud800" + "a" * 400})  # valid JSON text: '{"text": "\\ud800aaa…"}'
    json.loads(args)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}
    messages = [Message("assistant", None, tool_calls=[call], tokens=5, seq=1)]
    after = prune(messages, 1)[0].tool_calls[0]["function"]["arguments"]
    json.loads(after)  # got: JSONDecodeError (cut at 200 chars + "…")


def test_prune_leaves_short_arguments_values_alone() -> None:
    args = '{"id": 123456789012345678901234567890}'
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}
    messages = [Message("assistant", None, tool_calls=[call], tokens=5, seq=1)]
    after = prune(messages, 1)[0].tool_calls[0]["function"]["arguments"]
    assert "123456789012345678901234567890" in after  # got: '{"id":1.2345678901234568e29}'
