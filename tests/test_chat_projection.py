"""The Chat Completions adapter (protocols/chat_completions.py): turn events → the payloads a
client reads, byte for byte — deltas passed through as the upstream's own bytes, the end held
until the commit and carrying the `tether` object, usage only when asked, then [DONE]."""

from __future__ import annotations

import orjson

from tether.engine.events import Compacted, Failed, Finished, Started, TextDelta, Usage
from tether.engine.request import TurnInfo
from tether.errors import TetherError
from tether.model import Message
from tether.protocols.chat_completions import DONE, ChatCompletions
from tether.upstream.base import Chunk

INFO = TurnInfo(conversation_id="c1", turn_id="turn_1", epoch=2, version=4)
TETHER = {
    "conversation_id": "c1",
    "turn_id": "turn_1",
    "epoch": 2,
    "compacted": False,
    "tokens_before": None,
    "tokens_after": None,
}


def chunk(data: dict[str, object]) -> Chunk:
    # the upstream's bytes, spaced unlike orjson, to tell passed-through bytes from re-encoded
    return Chunk(data=data, raw=orjson.dumps(data).replace(b",", b", "))


def delta(text: str, finish: str | None = None) -> dict[str, object]:
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }


def finished(reason: str = "stop") -> Finished:
    return Finished(
        info=INFO, reply=Message(role="assistant", content="ab"), finish_reason=reason, model="m"
    )


def test_deltas_pass_through_and_the_end_waits_for_the_commit() -> None:
    chat = ChatCompletions(stream=True, include_usage=False)
    first, last = chunk(delta("a")), chunk(delta("b", "stop"))
    usage = chunk({"id": "chatcmpl-9", "choices": [], "usage": {"total_tokens": 3}})
    assert chat.render(Started(info=INFO)) == []
    assert chat.render(TextDelta(text="a", chunk=first)) == [first.raw]
    assert chat.render(TextDelta(text="b", chunk=last)) == []  # held: it finishes the answer
    assert chat.render(Usage(usage={"total_tokens": 3}, estimated=False, chunk=usage)) == []
    end = chat.render(finished())
    assert end == [orjson.dumps({**delta("b", "stop"), "tether": TETHER}), DONE]


def test_usage_goes_out_when_asked_and_an_estimate_is_made_into_a_chunk() -> None:
    chat = ChatCompletions(stream=True, include_usage=True)
    chat.render(TextDelta(text="a", chunk=chunk(delta("a"))))
    estimate = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "estimated": True}
    assert chat.render(Usage(usage=estimate, estimated=True)) == []
    end = chat.render(finished("length"))
    meta = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 7, "model": "m"}
    finish = {"index": 0, "delta": {}, "finish_reason": "length"}
    assert [orjson.loads(p) for p in end[:-1]] == [
        {**meta, "choices": [finish], "tether": TETHER},
        {**meta, "choices": [], "usage": estimate},
    ]
    assert end[-1] == DONE


def test_compaction_is_a_comment_and_a_failure_an_error_event() -> None:
    chat = ChatCompletions(stream=True)
    told = chat.render(
        Compacted(conversation_id="c1", epoch=3, tokens_before=900, tokens_after=300)
    )
    assert told == [
        b": tether compacted conversation=c1 epoch=3 tokens_before=900 tokens_after=300"
    ]
    error = TetherError(502, "upstream_error", "the upstream failed")
    assert chat.render(Failed(error=error)) == [orjson.dumps(error.body())]


def test_a_json_body_is_the_upstreams_answer_with_the_required_fields_and_tether() -> None:
    chat = ChatCompletions(stream=False)
    answer = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant"}}]}
    event = Finished(
        info=INFO,
        reply=Message(role="assistant", content=None),
        finish_reason="stop",
        model="m",
        response=answer,
    )
    assert (
        chat.render(Compacted(conversation_id="c1", epoch=1, tokens_before=1, tokens_after=1)) == []
    )
    (body,) = chat.render(event)
    assert orjson.loads(body) == {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None},
                "logprobs": None,
            }
        ],
        "tether": TETHER,
    }
    assert (
        chat.headers(INFO)["ETag"] == '"v4"' and chat.headers(INFO)["X-Hermes-Session-Id"] == "c1"
    )
