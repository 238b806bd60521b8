"""Unit tests for the identifier ledger, secret redaction and the summary frame
(tether.compaction.ledger, tether.compaction.summary)."""

from __future__ import annotations

import orjson
import pytest

from tether.compaction.ledger import REDACTED, extract, merge_ledgers, redact
from tether.compaction.ledger import render as render_ledger
from tether.compaction.summary import BEGIN, END, frame, span_text, summariser_request
from tether.compaction.view import system_block
from tether.model import Checkpoint, Message

# ---------------------------------------------------------------------------------------------
# extract
# ---------------------------------------------------------------------------------------------

IDENTIFIERS = [
    ("url", "https://example.com/a/b?x=1"),
    ("unix path", "/srv/app/config.yaml"),
    ("relative path", "./src/main.py"),
    ("windows path", "C:\\Users\\x\\file.txt"),
    ("email", "alice.smith+ops@example.org"),
    ("ms", "250 ms"),
    ("GiB", "3.5 GiB"),
    ("percent", "42%"),
    ("dollars", "$1,200.50"),
    ("km", "17 km"),
    ("uuid", "123e4567-e89b-12d3-a456-426614174000"),
    ("git hash", "9fceb02d0ae598e95dc970b74767f19372d61af8"),
    ("ticket", "JIRA-1234"),
    ("id", "order_8812"),
    ("quoted name", "Project Falcon"),
]


@pytest.mark.parametrize(("kind", "value"), IDENTIFIERS, ids=[k for k, _ in IDENTIFIERS])
def test_extract_finds_each_identifier_verbatim(kind: str, value: str) -> None:
    shown = f'"{value}"' if kind == "quoted name" else value
    text = f"Before the change, {shown} was what we had. Please keep it."
    found = extract(text)
    assert value in found, (kind, found)


def test_extract_trims_sentence_punctuation_from_urls() -> None:
    for tail in (".", ",", ";", ":", "!", "?", ")"):
        found = extract(f"(see https://example.com/a/b?x=1{tail} for details)")
        assert "https://example.com/a/b?x=1" in found, (tail, found)
        assert f"https://example.com/a/b?x=1{tail}" not in found


@pytest.mark.parametrize(
    "path", ["/srv/app/config.yaml", "./src/main.py", "C:\\Users\\x\\file.txt", "/var/log/app"]
)
def test_extract_trims_a_full_stop_after_a_path(path: str) -> None:
    found = extract(f"Open {path}.")
    assert path in found, found  # got: [path + ".", ...]
    assert f"{path}." not in found


PARAGRAPH = (
    'We kicked off "Project Falcon" on Monday. The spec lives at https://example.com/a/b?x=1 and '
    "the service reads /srv/app/config.yaml (locally ./src/main.py, on Windows "
    "C:\\Users\\x\\file.txt). Ping alice.smith+ops@example.org if p99 goes over 250 ms. The box "
    "has 3.5 GiB free, CPU sits at 42%, the budget is $1,200.50 and the site is 17 km away. "
    "Request 123e4567-e89b-12d3-a456-426614174000 failed after commit "
    "9fceb02d0ae598e95dc970b74767f19372d61af8; see JIRA-1234 and order_8812. "
    'Again: "Project Falcon", order_8812, 250 ms and JIRA-1234.'
)


def test_extract_keeps_order_of_first_appearance_without_duplicates() -> None:
    found = extract(PARAGRAPH)
    assert len(found) == len(set(found))
    expected = [
        "Project Falcon",
        "https://example.com/a/b?x=1",
        "/srv/app/config.yaml",
        "./src/main.py",
        "C:\\Users\\x\\file.txt",
        "alice.smith+ops@example.org",
        "250 ms",
        "3.5 GiB",
        "42%",
        "$1,200.50",
        "17 km",
        "123e4567-e89b-12d3-a456-426614174000",
        "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "JIRA-1234",
        "order_8812",
    ]
    assert [v for v in found if v in expected] == expected
    # every value is verbatim text of the input, listed by where it first appears
    positions = [PARAGRAPH.find(v) for v in found]
    assert all(p >= 0 for p in positions), found
    assert positions == sorted(positions)


def test_extract_of_plain_prose_finds_nothing() -> None:
    assert extract("Thanks, that looks good to me. Let us go ahead with the plan tomorrow.") == []
    assert extract("") == []


# ---------------------------------------------------------------------------------------------
# redact
# ---------------------------------------------------------------------------------------------

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA7bqZ0xGz3Vv9dQ\n"
    "hN1c2VyLWJvZHktc2VjcmV0LXBhcnQ=\n"
    "-----END RSA PRIVATE KEY-----"
)

# (name, text with the secret, the secret value that must disappear, what should remain)
SECRETS = [
    ("openai key", "use sk-proj-AbCdEf0123456789xyzXYZ now", "AbCdEf0123456789xyzXYZ", "use "),
    ("tether key", "key tk_live_0123456789abcdefghijKLMN ok", "0123456789abcdefghijKLMN", "key "),
    (
        "bearer",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        "Authorization: ",
    ),
    ("password", "login with password=hunter2xyz please", "hunter2xyz", "password="),
    ("api key", 'config api_key: "abcd1234" set', "abcd1234", "api_key: "),
    ("aws id", "aws id AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE", "aws id "),
    ("pem", f"the key:\n{PEM}\nend", "MIIEpAIBAAKCAQEA7bqZ0xGz3Vv9dQ", "the key:"),
]


@pytest.mark.parametrize(("name", "text", "secret", "kept"), SECRETS, ids=[s[0] for s in SECRETS])
def test_redact_removes_secrets(name: str, text: str, secret: str, kept: str) -> None:
    out = redact(text)
    assert secret not in out, out
    assert REDACTED in out
    assert kept in out
    assert redact(out) == out  # idempotent


def test_redact_removes_the_whole_pem_block() -> None:
    out = redact(f"before\n{PEM}\nafter")
    assert out == f"before\n{REDACTED}\nafter"


def test_redact_keeps_the_key_name_of_a_key_value_secret() -> None:
    assert redact("password=hunter2xyz") == f"password={REDACTED}"
    assert redact('api_key: "abcd1234"') == f"api_key: {REDACTED}"
    assert redact("TOKEN = 'longvalue99'") == f"TOKEN = {REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "The deploy took 250 ms and used 3.5 GiB; see https://example.com/a/b?x=1 for details.",
        "The token budget is 4000 tokens and the password policy needs 12 chars.",
        "Ask alice.smith+ops@example.org about JIRA-1234 and order_8812 in /srv/app/config.yaml.",
        "A risk-free skeleton task_queue, a desk-lamp and sk-short stay as they are.",
        'We call it "Project Falcon"; commit 9fceb02d0ae598e95dc970b74767f19372d61af8.',
        "Bearer of bad news: the key was rotated.",
        "",
    ],
)
def test_redact_leaves_normal_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redacted_values_never_reach_the_ledger() -> None:
    text = "\n".join(t for _, t, _, _ in SECRETS) + "\n" + PARAGRAPH
    found = extract(redact(text))
    for _, _, secret, _ in SECRETS:
        assert all(secret not in item for item in found), (secret, found)
    assert all(REDACTED not in item for item in found)
    # and the real identifiers are still there
    assert {"order_8812", "JIRA-1234", "Project Falcon", "250 ms"} <= set(found)


def _span_with_secrets() -> list[Message]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {
            "name": "run_shell",
            "arguments": orjson.dumps(
                {
                    "cmd": "curl -H 'Authorization: Bearer "
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl' https://example.com/a/b?x=1"
                }
            ).decode(),
        },
    }
    return [
        Message("user", "My key is sk-proj-AbCdEf0123456789xyzXYZ, the ticket JIRA-1234.", seq=1),
        Message("assistant", "Calling the API for order_8812.", tool_calls=[call], seq=2),
        Message(
            "tool",
            f"login with password=hunter2xyz\naws id AKIAIOSFODNN7EXAMPLE\n{PEM}\n"
            'config api_key: "abcd1234"\nkey tk_live_0123456789abcdefghijKLMN',
            tool_call_id="call_1",
            seq=3,
        ),
        Message("assistant", [{"type": "text", "text": "Done, 250 ms."}], seq=4),
    ]


def test_summariser_request_never_contains_a_planted_secret() -> None:
    request = summariser_request(
        "m", "Previous: the user gave password=hunter2xyz.", _span_with_secrets(), 500
    )
    dumped = orjson.dumps(request).decode()
    texts = [m["content"] for m in request["messages"]]
    for _, _, secret, _ in SECRETS:
        assert all(secret not in t for t in texts), secret
        assert secret not in dumped, secret
    transcript = texts[1]
    # the rest of the transcript is still there
    for needle in ("JIRA-1234", "order_8812", "https://example.com/a/b?x=1", "250 ms", "call_1"):
        assert needle in transcript
    assert request["max_tokens"] == 500
    assert "500 tokens" in texts[0]


def test_span_text_is_redacted_and_feeds_a_clean_ledger() -> None:
    text = span_text(_span_with_secrets())
    found = extract(text)
    for _, _, secret, _ in SECRETS:
        assert secret not in text
        assert all(secret not in item for item in found)
    assert {"JIRA-1234", "order_8812", "https://example.com/a/b?x=1", "250 ms"} <= set(found)


LEAK = (
    "redact's key=value pattern starts with \\b(password|...|token)\\s*[:=], so it misses keys "
    'written as JSON ("password": "...") and keys with a prefix joined by \'_\' '
    "(POSTGRES_PASSWORD=..., client_secret=..., GITHUB_TOKEN=...): those secrets reach the "
    "summariser verbatim"
)


def test_summariser_request_redacts_secrets_in_json_tool_arguments() -> None:
    args = orjson.dumps({"user": "admin", "password": "hunter2xyz"}).decode()
    call = {"id": "c1", "type": "function", "function": {"name": "db_login", "arguments": args}}
    span = [Message("assistant", None, tool_calls=[call], seq=1)]
    content = summariser_request("m", None, span, 200)["messages"][1]["content"]
    assert (
        "hunter2xyz" not in content
    )  # got: ... db_login({"user":"admin","password":"hunter2xyz"})


def test_summariser_request_redacts_env_file_secrets() -> None:
    env = "POSTGRES_PASSWORD=hunter2xyz\nclient_secret=s3cr3tvalue\nGITHUB_TOKEN=abcd1234efgh"
    span = [Message("tool", env, tool_call_id="c1", seq=1)]
    content = summariser_request("m", None, span, 200)["messages"][1]["content"]
    for secret in ("hunter2xyz", "s3cr3tvalue", "abcd1234efgh"):
        assert secret not in content  # got: all three, verbatim


# ---------------------------------------------------------------------------------------------
# merge_ledgers
# ---------------------------------------------------------------------------------------------


def test_merge_keeps_previous_verbatim_then_appends_new_unique() -> None:
    previous = ["/srv/app/config.yaml", "JIRA-1234", "250 ms"]
    new = ["250 ms", "order_8812", "JIRA-1234", "order_8812", "Project Falcon"]
    merged = merge_ledgers(previous, new)
    assert merged == [*previous, "order_8812", "Project Falcon"]
    assert merge_ledgers(previous, []) == previous
    assert merge_ledgers([], new) == ["250 ms", "order_8812", "JIRA-1234", "Project Falcon"]
    assert merge_ledgers(merged, new) == merged  # merging the same again changes nothing


def test_identifiers_survive_ten_successive_merges() -> None:
    ledger: list[str] = []
    rounds: list[list[str]] = []
    for r in range(1, 11):
        parts = []
        for i in range(12):
            parts += [f"order_{r}{i:03d}", f"JIRA-{r * 100 + i}", f"/srv/round{r}/file{i}.yaml"]
        # each round also mentions some identifiers from earlier rounds again
        if rounds:
            parts += rounds[0][:5] + rounds[-1][-5:]
        text = "Seen: " + ", ".join(parts) + " today"
        new = extract(text)
        assert [p for p in parts if p not in new] == []  # extract found all of this round
        before = list(ledger)
        ledger = merge_ledgers(ledger, new)
        assert ledger[: len(before)] == before  # earlier ledger kept verbatim, in order
        rounds.append([p for p in new if p not in before])
        assert len(ledger) == len(set(ledger))
    assert len(rounds) == 10 and all(len(r) >= 36 for r in rounds)
    for r, items in enumerate(rounds, start=1):
        assert all(item in ledger for item in items), r
    assert ledger == [item for r in rounds for item in r]  # in order of first appearance


def test_merge_caps_the_ledger_at_the_newest_limit_entries() -> None:
    """Documented cap: only the newest `limit` entries are kept, so the oldest identifiers do
    fall out once a conversation has produced more than `limit` (default 2000)."""
    previous = [f"order_{i}" for i in range(1990)]
    merged = merge_ledgers(previous, [f"JIRA-{i}" for i in range(1, 21)])
    assert len(merged) == 2000
    assert merged[0] == "order_10" and merged[-1] == "JIRA-20"
    assert "order_0" not in merged
    assert merge_ledgers(["a1", "b2", "c3"], ["d4"], limit=2) == ["c3", "d4"]


# ---------------------------------------------------------------------------------------------
# frame / system_block
# ---------------------------------------------------------------------------------------------

SUMMARY = "## Goal\nMigrate the billing service.\n## Open tasks\n- rotate the keys"
LEDGER = [
    "https://example.com/a/b?x=1",
    "C:\\Users\\x\\file.txt",
    "$1,200.50",
    "Project Falcon",
    "9fceb02d0ae598e95dc970b74767f19372d61af8",
]


def test_frame_holds_markers_summary_and_every_ledger_item() -> None:
    block = frame(SUMMARY, LEDGER)
    assert block.startswith(BEGIN)
    assert block.endswith(END)
    assert SUMMARY in block
    for item in LEDGER:
        assert f"- {item}" in block.splitlines()
    assert block.index(BEGIN) < block.index(SUMMARY) < block.index(LEDGER[0]) < block.index(END)
    assert render_ledger(LEDGER) in block


def test_frame_without_summary_or_ledger() -> None:
    assert frame(None, []) == f"{BEGIN}\n\n{END}"
    only_ledger = frame(None, ["JIRA-1234"])
    assert "- JIRA-1234" in only_ledger and only_ledger.startswith(BEGIN)
    assert frame(SUMMARY, []) == f"{BEGIN}\n\n{SUMMARY}\n\n{END}"


def _checkpoint(summary: str | None, ledger: list[str]) -> Checkpoint:
    return Checkpoint(
        epoch=1,
        covers_through_seq=4,
        prune_through_seq=4,
        summary=summary,
        ledger=ledger,
        tokens_before=0,
        tokens_after=0,
        model=None,
        prompt_version="v",
        stats={},
    )


def test_system_block_appends_the_frame_to_the_system_prompt() -> None:
    assert system_block("be brief", None) == "be brief"
    assert system_block("be brief", _checkpoint(None, [])) == "be brief"
    assert system_block(None, _checkpoint(SUMMARY, LEDGER)) == frame(SUMMARY, LEDGER)
    assert system_block("be brief", _checkpoint(SUMMARY, LEDGER)) == (
        "be brief\n\n" + frame(SUMMARY, LEDGER)
    )
