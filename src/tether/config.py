"""Settings: one place for every default. Environment variables are ``TETHER_<NAME>``. The
README's configuration table is generated from this class (`settings_table`; tests/test_docs.py
holds them equal, descriptions included).

Precedence (highest first): command-line flags, environment, the optional TOML config file
(``--config`` or ``TETHER_CONFIG``), then the defaults below.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tether.config_tools import McpServerConfig, TenantConfig

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, description="Port to listen on.")
    database_url: str = Field(
        "sqlite:///./data/tether.db",
        description="Where conversations live: `sqlite:///path/to/file.db` (the embedded "
        "default), or `postgresql://user@host/db` (needs `tether[postgres]`; optional "
        "`?pool_size=`, default 10, and `?search_path=`; its migration creates the `pg_trgm` "
        "and `unaccent` extensions). Several replicas on one PostgreSQL are not supported yet.",
    )
    instance_id: str = Field(
        "",
        validate_default=True,
        description=(
            "Names this server in the running turns and idempotency claims it owns, so a "
            "restart sweeps only its own (empty, the default: the host name)."
        ),
    )
    upstream_base_url: str | None = Field(
        None,
        description=(
            "OpenAI-compatible upstream, e.g. `https://api.openai.com/v1`, "
            "`http://127.0.0.1:11434/v1` (Ollama)."
        ),
    )
    upstream_api_key: str | None = Field(None, description="API key sent to the upstream.")
    default_model: str | None = Field(None, description="Model used when a request names none.")
    upstream_timeout: float = Field(
        120.0, description="Seconds to wait for the upstream (per read)."
    )
    upstream_connect_timeout: float = Field(10.0, description="Seconds to connect to the upstream.")
    max_turn_seconds: float = Field(
        600.0,
        gt=0,
        description=(
            "One deadline per turn for the model's answer, retries included (`504 "
            "turn_deadline_exceeded`; nothing is stored)."
        ),
    )
    upstream_retries: int = Field(
        2,
        description="Retries on connect errors, 408/409/429/5xx — only before the first token.",
    )
    upstream_backoff: float = Field(
        0.5, description="First retry delay in seconds (doubles; `Retry-After` wins)."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, description="Largest request body (also for chunked bodies)."
    )
    max_messages: int = Field(
        4096, ge=1, description="Most messages one request may carry (`413 too_many_messages`)."
    )
    max_content_chars: int = Field(
        8 * 1024 * 1024,
        ge=1,
        description="Most characters in one message's content (`413 content_too_large`).",
    )
    queue_timeout: float = Field(
        30.0,
        description=(
            "Seconds a request waits for its conversation's previous turn before `409 "
            "conversation_busy`."
        ),
    )
    idempotency_retention: float = Field(
        86400.0, description="Seconds an `Idempotency-Key`'s result is kept for replay."
    )
    on_disconnect: Literal["continue", "cancel"] = Field(
        "continue",
        description=(
            "When a streaming client goes away mid-turn: `continue` (the turn finishes, is "
            "stored and stays resumable) or `cancel` it."
        ),
    )
    resume_buffer_bytes: int = Field(
        2 * 1024 * 1024,
        ge=0,
        description=(
            "Bytes of recent streams kept in memory, counting ~2 KB of overhead per turn (a "
            "short answer's stream weighs 3–5 KB, so about five hundred) so a client can "
            "resume with `Last-Event-ID` after the turn finished (older ones: `410 "
            "events_expired`, read the turn instead)."
        ),
    )
    stream_send_timeout: float = Field(
        30.0,
        gt=0,
        description=(
            "Seconds a stream waits for a client that stopped reading before closing the "
            "connection (the turn itself continues)."
        ),
    )
    dangling_tool_calls: Literal["close", "reject"] = Field(
        "close",
        description=(
            "A user message after tool calls nobody answered: `close` them with a tool result"
            " saying no result was returned (stored, marked `tether_synthetic`, listed in the"
            " turn's notes), or `reject` the request (`422 invalid_message_sequence`)."
        ),
    )
    sse_ping_seconds: float = Field(
        15.0,
        ge=0,
        description=(
            "Seconds of silence on a stream before a keep-alive comment line (`: ping`) goes "
            "out, so proxies keep the connection open; `0` never."
        ),
    )
    shutdown_grace_seconds: float = Field(
        30.0,
        ge=0,
        description=(
            "On SIGTERM: new turns get `503` + `Retry-After`, running turns get this long to "
            "finish, then are stopped and recorded `incomplete`; exit code 0."
        ),
    )
    view_cache_messages: int = Field(
        24_000,
        ge=0,
        description=(
            "Messages of recent conversations' views kept in memory (~430 bytes each with "
            "their ready JSON; `0` turns the cache off)."
        ),
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description='Browser origins allowed by CORS, JSON list (`["*"]` for any).',
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Host names accepted besides `localhost`, `127.0.0.1` and `[::1]`, JSON list "
            "(DNS-rebinding protection: other `Host` headers get `421 misdirected_request`). "
            "Empty: only those when listening on a loopback address, any host otherwise; when"
            ' set, only those and the listed names; `["*"]` turns the check off.'
        ),
    )
    rate_limit_rps: float = Field(
        0.0,
        ge=0,
        description=(
            "Requests a second per API key (token bucket, in memory; `429 "
            "rate_limit_exceeded` with `Retry-After` beyond it). `0`, the default, is "
            "unlimited: a self-hosted server usually starts without a limit."
        ),
    )
    rate_limit_burst: int = Field(
        0,
        ge=0,
        description=(
            "Requests a key may send at once before the rate applies; `0` is one second's "
            "worth (at least 1)."
        ),
    )
    unknown_models: Literal["reject", "allow"] = Field(
        "reject",
        description=(
            "A request naming a model the upstream's model list does not hold: `reject` it "
            "(`404 model_not_found`, naming the models it serves; the list is read at "
            "start-up and again at most every 30 s for an unknown name) or `allow` it (for "
            "upstreams that serve one model under any name; the bundled local model runs so)."
            " An upstream that lists no models is not checked."
        ),
    )
    default_context_window: int = Field(
        128000, description="Context window (tokens) of models not listed below."
    )
    model_context_windows: dict[str, int] = Field(
        default_factory=dict, description='Per-model windows, JSON: `{"gpt-4o-mini": 128000}`.'
    )
    reserved_output_tokens: int = Field(
        4096,
        description=(
            "Tokens kept for the reply when the request sets no `max_tokens` (at most a "
            "quarter of the window)."
        ),
    )
    compaction_threshold: float = Field(
        0.75,
        gt=0,
        le=1,
        description=(
            "Compact when the model's view exceeds this share of (window − reserved output)."
        ),
    )
    model_compaction_thresholds: dict[str, float] = Field(
        default_factory=dict, description='Per-model thresholds, JSON: `{"small-model": 0.6}`.'
    )
    compaction_tail_ratio: float = Field(
        0.2, gt=0, lt=1, description="Share of the threshold kept verbatim as the recent tail."
    )
    compaction_min_tail_messages: int = Field(
        8, ge=1, description="Messages kept verbatim at least (within 1.5× the tail budget)."
    )
    compaction_model: str | None = Field(
        None, description="Model that writes summaries (default: the conversation's model)."
    )
    default_max_tokens: int | None = Field(
        None,
        description=(
            "`max_tokens` sent upstream when a request sets none (the local model uses 256)."
        ),
    )
    upstream_system_role: Literal["native", "inline"] = Field(
        "native",
        description=(
            "`inline` folds the system message (and any summary) into the first user message,"
            " for chat templates that drop system messages (set for the local Gemma model)."
        ),
    )
    local_model: Literal["auto", "off"] = Field(
        "auto",
        description=(
            "With no upstream configured, run the bundled local model (`tether[local]`) as "
            "the upstream; `off` to never do so."
        ),
    )
    tokenizer: Literal["cl100k_base", "o200k_base"] = Field(
        "cl100k_base",
        description=(
            "Offline tokenizer for estimates: `cl100k_base` (~51 MB in memory) or "
            "`o200k_base` (~87 MB, closer on CJK). The upstream's reported usage is the truth"
            " either way."
        ),
    )
    log_level: str = Field("info", description="`debug`, `info`, `warning` or `error`.")
    log_format: Literal["console", "json"] = Field(
        "console",
        description="`console`: one readable line per event; `json`: one JSON object per line, "
        "with the request's `request_id` (`X-Request-Id`, accepted or made) on every event "
        "logged while it is answered.",
    )
    # the HTTP front (api/protocol.py)
    max_header_bytes: int = Field(
        65536,
        ge=1024,
        description=(
            "Largest request head: request line and headers (`431 "
            "request_header_fields_too_large`, then the connection is closed)."
        ),
    )
    max_headers: int = Field(100, ge=8, description="Most headers one request may carry (`431`).")
    request_read_timeout: float = Field(
        20.0,
        gt=0,
        description=(
            "Seconds a client has to send a whole request (head and body) from connecting, or"
            " from its first byte on a kept-alive connection (`408 request_timeout`; a "
            "connection that sent nothing is just closed)."
        ),
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle kept-alive connection stays open."
    )
    max_connections: int = Field(
        4096,
        ge=16,
        description=(
            "Connections open at once (at most the file-descriptor limit less 256; the soft "
            "limit is raised to the hard one at start). Past it, the connection waiting "
            "longest without a whole request is closed to make room; if every connection has "
            "a request being answered, the new one gets `503 too_many_connections`."
        ),
    )

    mcp_servers: list[McpServerConfig] = Field(
        default_factory=list,
        description=(
            "MCP servers whose tools the model may call, run by Tether (a JSON list; in the "
            "config file `[[mcp_servers]]` tables): see docs/tools.md."
        ),
    )
    builtin_tools: list[str] = Field(
        default_factory=list,
        description=(
            'Tether\'s own tools to offer the model, e.g. `["current_time"]` (none by default: '
            "with no tools configured, requests reach the upstream as they are)."
        ),
    )
    tenants: dict[str, TenantConfig] = Field(
        default_factory=dict,
        description=(
            "Per-tenant limits (in the config file `[tenants.NAME]`): `tools`, the server "
            "tools that tenant may use (default all)."
        ),
    )
    max_tool_rounds: int = Field(
        16,
        ge=1,
        description=(
            "Model calls with server tools in one turn; past it the model is asked for an "
            "answer without tools (the turn's notes say so)."
        ),
    )
    max_tool_output_chars: int = Field(
        100_000,
        ge=100,
        description="Most characters of one tool output the model sees (the head and a note).",
    )

    approval_timeout: float = Field(
        300.0, gt=0, description="Seconds a tool call waits for approval before it is denied."
    )

    titles: Literal["off", "auto"] = Field(
        "off",
        description="`auto`: after a conversation's first turn, ask the compaction model for a "
        "short title (one extra upstream call per conversation). `off`: no extra call.",
    )
    ui_secret: str | None = Field(
        None,
        description="Key signing the dashboard's (`/ui`) session cookies. Unset: a random one "
        "per process (a restart signs everyone out); set it when several replicas serve `/ui`.",
    )

    @field_validator("instance_id")
    @classmethod
    def _host_name_by_default(cls, value: str) -> str:
        return value or socket.gethostname()

    @property
    def loopback_only(self) -> bool:
        """Listening on a loopback address only: `localhost` or a loopback IP address (a host
        name that merely starts with `127.` is not one)."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host in LOOPBACK_HOSTS


def settings_table() -> str:
    """The README's configuration table: every setting, its default and its description."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append(f"| `TETHER_{name.upper()}` | {_shown(default)} | {field.description} |")
    return "\n".join(rows)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults < config file < environment < explicit overrides."""
    file_values: dict[str, Any] = {}
    path = config_file or os.environ.get("TETHER_CONFIG")
    if path:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        file_values = {k.replace("-", "_"): v for k, v in raw.items()}
    env_set = {name for name in Settings.model_fields if f"TETHER_{name.upper()}" in os.environ}
    init = {k: v for k, v in file_values.items() if k not in env_set}
    init.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**init)
