"""Settings: one place for every default. Environment variables are ``TETHER_<NAME>``.

Precedence (highest first): command-line flags, environment, the optional TOML config file
(``--config`` or ``TETHER_CONFIG``), then the defaults below.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, description="Port to listen on.")
    database_url: str = Field(
        "sqlite:///./data/tether.db",
        description="Where conversations live: sqlite:///path/to/file.db (embedded default).",
    )
    upstream_base_url: str | None = Field(
        None,
        description="OpenAI-compatible upstream, e.g. https://api.openai.com/v1 "
        "or http://127.0.0.1:11434/v1 (Ollama).",
    )
    upstream_api_key: str | None = Field(None, description="API key sent to the upstream.")
    default_model: str | None = Field(None, description="Model used when a request names none.")
    upstream_timeout: float = Field(
        120.0, description="Seconds to wait for the upstream to answer (per read)."
    )
    upstream_connect_timeout: float = Field(10.0, description="Seconds to connect upstream.")
    max_turn_seconds: float = Field(
        600.0, gt=0, description="One deadline per turn for the model's answer (504 after it)."
    )
    upstream_retries: int = Field(
        2,
        description="Retries on connect errors and 408, 409, 429, 500, 502, 503, 504, only "
        "before the first token.",
    )
    upstream_backoff: float = Field(0.5, description="First retry delay in seconds (doubles).")
    max_body_bytes: int = Field(8 * 1024 * 1024, description="Largest request body accepted.")
    max_messages: int = Field(4096, ge=1, description="Most messages one request may carry.")
    max_content_chars: int = Field(
        8 * 1024 * 1024, ge=1, description="Most characters in one message's content."
    )
    queue_timeout: float = Field(
        30.0,
        description="Seconds a request waits for its conversation's previous turn before "
        "409 conversation_busy.",
    )
    idempotency_retention: float = Field(
        86400.0, description="Seconds an Idempotency-Key's result is kept for replay (24 h)."
    )
    on_disconnect: Literal["continue", "cancel"] = Field(
        "continue",
        description="When a streaming client goes away mid-turn: continue (finish and store "
        "the turn; resumable) or cancel it.",
    )
    resume_buffer_bytes: int = Field(
        2 * 1024 * 1024,
        ge=0,
        description="Bytes of recent streamed turns' events kept in memory, so a client can "
        "resume with Last-Event-ID after the turn finished.",
    )
    stream_send_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a stream waits for a client that stopped reading before closing it.",
    )
    dangling_tool_calls: Literal["close", "reject"] = Field(
        "close",
        description="A user message after tool calls nobody answered: close them with a tool "
        "result saying no result was returned (stored, noted in the turn), or reject the "
        "request (422 invalid_message_sequence).",
    )
    sse_ping_seconds: float = Field(
        15.0,
        ge=0,
        description="Seconds of silence on a stream before a keep-alive comment line goes out "
        "(0: never).",
    )
    shutdown_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM: seconds running turns get to finish before they are stopped.",
    )
    view_cache_messages: int = Field(
        24_000,
        ge=0,
        description="Messages of recent conversations' views kept in memory (~430 bytes each "
        "with their ready JSON); 0 turns the cache off.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed by CORS ('*' for any)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names accepted besides localhost, 127.0.0.1 and [::1] (DNS "
        "rebinding protection, 421 otherwise). Empty: only those when listening on a loopback "
        "address, any host otherwise. '*' accepts any.",
    )
    rate_limit_rps: float = Field(
        0.0,
        ge=0,
        description="Requests a second allowed per API key (token bucket; 429 "
        "rate_limit_exceeded beyond it). 0 turns rate limiting off.",
    )
    rate_limit_burst: int = Field(
        0,
        ge=0,
        description="Requests a key may send at once before the rate applies; 0 means one "
        "second's worth (at least 1).",
    )
    unknown_models: Literal["reject", "allow"] = Field(
        "reject",
        description="A request naming a model the upstream's model list does not hold: reject "
        "it (404 model_not_found) or allow it (for upstreams that serve one model under any "
        "name; the bundled local model runs so). Upstreams that list no models are not checked.",
    )
    default_context_window: int = Field(
        128000, description="Context window (tokens) of models not listed in model_context_windows."
    )
    model_context_windows: dict[str, int] = Field(
        default_factory=dict, description='Per-model windows, JSON: {"gpt-4o-mini": 128000}.'
    )
    reserved_output_tokens: int = Field(
        4096,
        description="Tokens kept free for the reply when the request sets no max_tokens "
        "(at most a quarter of the window).",
    )
    compaction_threshold: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Compact when the view exceeds this share of (window - reserved output).",
    )
    model_compaction_thresholds: dict[str, float] = Field(
        default_factory=dict, description='Per-model thresholds, JSON: {"small-model": 0.6}.'
    )
    compaction_tail_ratio: float = Field(
        0.2, gt=0, lt=1, description="Share of the threshold kept verbatim as the recent tail."
    )
    compaction_min_tail_messages: int = Field(
        8, ge=1, description="Messages kept verbatim at least (within 1.5x the tail budget)."
    )
    compaction_model: str | None = Field(
        None, description="Model that writes summaries (default: the conversation's model)."
    )
    default_max_tokens: int | None = Field(
        None, description="max_tokens sent upstream when a request sets none (local model: 256)."
    )
    upstream_system_role: Literal["native", "inline"] = Field(
        "native",
        description="inline: fold the system message into the first user message, for chat "
        "templates that drop system messages (the local Gemma model uses this).",
    )
    local_model: Literal["auto", "off"] = Field(
        "auto",
        description="With no upstream configured, run the bundled local model (tether[local]) "
        "as the upstream: auto, or off.",
    )
    tokenizer: Literal["cl100k_base", "o200k_base"] = Field(
        "cl100k_base",
        description="Offline tokenizer for estimates (cl100k_base: ~51 MB in memory; "
        "o200k_base: ~87 MB, closer for CJK).",
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    # the HTTP front (api/protocol.py)
    max_header_bytes: int = Field(
        65536, ge=1024, description="Largest request head (request line and headers; 431 beyond)."
    )
    max_headers: int = Field(100, ge=8, description="Most headers one request may carry (431).")
    request_read_timeout: float = Field(
        20.0,
        gt=0,
        description="Seconds a client has to send a whole request (head and body), from "
        "connecting or from its first byte (408, or closed if it sent nothing).",
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle kept-alive connection stays open."
    )
    max_connections: int = Field(
        4096,
        ge=16,
        description="Connections open at once (at most the file-descriptor limit less 256); "
        "past it the longest-waiting connection without a whole request is closed, or the new "
        "one gets 503 too_many_connections.",
    )

    @property
    def upstream_configured(self) -> bool:
        return bool(self.upstream_base_url)

    @property
    def loopback_only(self) -> bool:
        """Listening on a loopback address only: `localhost` or a loopback IP address (a host
        name that merely starts with `127.` is not one)."""
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host in LOOPBACK_HOSTS


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
