"""The CLI as a new user meets it: `keys list`, what the first key does to open mode, a port
already in use, help text (real `python -m tether` processes on real SQLite files)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import httpx

from tests.support import ScriptedUpstream, TetherServer


def words(text: str) -> str:
    return " ".join(text.split())


def test_keys_list_shows_prefixes_tenants_and_revocations(tmp_path: Path) -> None:
    srv = TetherServer(tmp_path / "keys.db", None)
    empty = srv.cli("keys", "list")
    assert empty.returncode == 0 and "no API keys" in words(empty.stderr)
    a, b = srv.create_key("acme"), srv.create_key("beta")
    assert srv.cli("keys", "revoke", b[:7]).returncode == 0
    listed = srv.cli("keys", "list")
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if "acme" in line or "beta" in line]
    assert len(lines) == 2
    assert a[:7] in lines[0] and "acme" in lines[0]
    assert b[:7] in lines[1] and "beta" in lines[1]
    assert lines[1].count("20") > lines[0].count("20")  # a revocation date on the revoked one
    assert a not in listed.stdout and b not in listed.stdout  # never the keys themselves


def test_the_first_key_says_open_mode_ends_and_where_old_conversations_went(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    srv = TetherServer(tmp_path / "open.db", upstream.base_url).start()
    try:
        r = httpx.post(
            f"{srv.url}/v1/chat/completions",
            headers={"X-Hermes-Session-Id": "made-open"},
            json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200
        out = srv.cli("keys", "create", "--tenant", "acme")
        assert out.returncode == 0
        said = words(out.stderr)
        assert "open mode ends" in said
        assert "tether keys create --tenant default" in said
        # the running server notices (a request without a key is now refused), and its log
        # says so: the banner's "auth OFF" is outdated
        deadline = time.monotonic() + 10
        while httpx.get(f"{srv.url}/v1/models").status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        time.sleep(0.3)
        assert "auth.enabled" in srv.output()
        second = srv.cli("keys", "create", "--tenant", "default")
        assert "open mode" not in words(second.stderr)  # only the first key says it
    finally:
        srv.stop()


def test_a_port_in_use_is_a_clear_error_before_the_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = TetherServer(tmp_path / "port.db", None, TETHER_PORT=str(port))
        out = srv.cli("serve")
    assert out.returncode == 2
    said = words(out.stderr)
    assert f"127.0.0.1:{port}" in said and "--port" in said
    assert "listening" not in said and "Traceback" not in said


def test_help_texts_keep_brackets_and_paragraphs(tmp_path: Path) -> None:
    srv = TetherServer(tmp_path / "help.db", None)
    top = srv.cli("--help").stdout
    assert "tether[local]" in top
    keys = srv.cli("keys", "--help").stdout
    revoke = next(line for line in keys.splitlines() if "revoke" in line)
    assert revoke.rstrip(" │").endswith("7-character") or "prefix." in keys
    assert "running server" not in keys  # only the first paragraph is a summary


def test_tools_list_shows_each_tool_its_source_and_a_server_that_is_down(tmp_path: Path) -> None:
    ledger = Path(__file__).parent / "tool_servers" / "ledger.py"
    conf = tmp_path / "tether.toml"
    conf.write_text(
        'builtin_tools = ["current_time"]\n'
        f'[[mcp_servers]]\nname = "ledger"\ncommand = [{str(sys.executable)!r}, {str(ledger)!r}]\n'
        'tools = ["add"]\napproval = ["add"]\n'
        '[[mcp_servers]]\nname = "ghost"\ncommand = ["/nonexistent/mcp-server"]\n'
    )
    srv = TetherServer(tmp_path / "tools.db", None)
    out = srv.cli("tools", "list", "--config", str(conf), "--wait", "5")
    assert out.returncode == 0, out.stderr
    rows = {line.split("│")[1].strip(): line for line in out.stdout.splitlines() if "│" in line}
    assert "builtin" in rows["current_time"] and "up" in rows["current_time"]
    add = rows["mcp__ledger__add"]
    assert "mcp:ledger" in add and "up" in add and "always" in add
    assert "mcp__ledger__echo" not in rows  # not in the server's allow-list
    assert "mcp:ghost" in rows["—"] and "down" in rows["—"]
    none = srv.cli("tools", "list")
    assert none.returncode == 0 and "no tools configured" in none.stdout


def test_conversations_import_ls_show_export_rm(tmp_path: Path) -> None:
    """The conversations commands on a file, no server: an export imported, listed, shown
    (checkpoint marked), exported again identically, then removed."""
    import orjson

    srv = TetherServer(tmp_path / "cli.db", None, COLUMNS="200")  # the table on one line
    export = {
        "object": "tether.conversation.export",
        "version": 1,
        "conversation": {
            "id": "cli-conv", "title": "From the CLI", "model": "m", "system_prompt": None,
            "metadata": {"k": "v"}, "aliases": ["cli-old"], "forked_from": None,
            "created_at": 1_700_000_000.0, "updated_at": 1_700_000_010.0,
        },
        "messages": [
            {"role": "user", "content": "hello there", "seq": 1, "created_at": 1_700_000_001.0},
            {"role": "assistant", "content": "hi", "seq": 2, "created_at": 1_700_000_002.0},
        ],
        "checkpoints": [
            {"epoch": 1, "covers_through_seq": 1, "summary": "a greeting", "tokens_before": 9,
             "tokens_after": 3, "model": "m", "created_at": 1_700_000_003.0},
        ],
    }  # fmt: skip
    path = tmp_path / "in.json"
    path.write_bytes(orjson.dumps(export))
    made = srv.cli("conversations", "import", str(path))
    assert made.returncode == 0 and "imported" in made.stdout, made.stderr
    listed = srv.cli("conversations", "ls")
    assert (
        listed.returncode == 0 and "cli-conv" in listed.stdout and "From the CLI" in listed.stdout
    )
    shown = srv.cli("conversations", "show", "cli-old")  # by its alias
    assert shown.returncode == 0 and "**Compaction, epoch 1**" in shown.stdout
    assert "hello there" in shown.stdout
    out = tmp_path / "out.json"
    assert srv.cli("conversations", "export", "cli-conv", "-o", str(out)).returncode == 0
    again = orjson.loads(out.read_bytes())
    assert again["conversation"]["aliases"] == ["cli-old"]
    assert [(m["role"], m["content"]) for m in again["messages"]] == [
        ("user", "hello there"),
        ("assistant", "hi"),
    ]
    assert again["checkpoints"][0]["summary"] == "a greeting"
    bad = tmp_path / "bad.json"
    bad.write_text('{"object": "something else"}')
    refused = srv.cli("conversations", "import", str(bad))
    assert refused.returncode == 1 and "not a Tether conversation export" in words(refused.stderr)
    removed = srv.cli("conversations", "rm", "cli-conv", "--yes")
    assert removed.returncode == 0 and "2 messages" in removed.stdout, removed.stderr
    missing = srv.cli("conversations", "show", "cli-conv")
    assert missing.returncode == 1 and "does not exist" in words(missing.stderr)
