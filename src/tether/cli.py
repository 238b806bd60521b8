"""`tether serve | migrate | keys | conversations`."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tether import __version__, logs
from tether.api import serving
from tether.api.app import create_app
from tether.api.auth import KEY_PREFIX, OPEN_TENANT, hash_key, new_key
from tether.config import Settings, load_settings
from tether.engine.ids import check_conversation_id
from tether.errors import TetherError
from tether.store import open_store
from tether.store.base import Store
from tether.store.sqlite_files import claim_single_server
from tether.upstream import local

app = typer.Typer(
    help="Tether: an OpenAI-compatible agent server whose conversations never lose the thread.",
    epilog="Every setting is also an environment variable TETHER_<NAME> (e.g. TETHER_HOST, "
    "TETHER_PORT, TETHER_DATABASE_URL, TETHER_UPSTREAM_BASE_URL, TETHER_UPSTREAM_API_KEY, "
    "TETHER_DEFAULT_MODEL) or a key in the TOML file given by --config / TETHER_CONFIG. "
    "The README lists them all.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(
    help="Manage API keys (each key belongs to one tenant).", no_args_is_help=True
)
conv_app = typer.Typer(help="Inspect stored conversations.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
local_app = typer.Typer(help="The bundled local model (tether\\[local]).", no_args_is_help=True)
app.add_typer(conv_app, name="conversations")
app.add_typer(local_app, name="local-model")
err = Console(stderr=True)
_held: list[Any] = []  # resources kept for the life of the process (the SQLite server lock)

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="TOML config file, keys as in TETHER_* (env TETHER_CONFIG)"
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="sqlite:///path.db (env TETHER_DATABASE_URL)"),
]


def setup_logging(level: str) -> None:
    """One line per event on stderr, written by a thread; plain tracebacks without locals,
    secrets redacted (tether/logs.py)."""
    logs.setup(level)


async def _with_store(settings: Settings, fn: Any) -> Any:
    """Open and migrate the database, run `fn`. A database that cannot be used (disk full,
    read-only, a newer schema, a bad URL) is one line on stderr and exit code 2, not a
    traceback."""
    try:
        store = open_store(settings.database_url)
        await store.open()
        try:
            await store.migrate()
            return await fn(store)
        finally:
            await store.close()
    except (TetherError, ValueError, OSError, sqlite3.Error) as exc:
        message = exc.message if isinstance(exc, TetherError) else str(exc)
        err.print(f"[red]error:[/red] {settings.database_url}: {message}", highlight=False)
        raise typer.Exit(2) from None


def _banner(settings: Settings, keys: int, local_model: bool = False) -> None:
    auth = f"on ({keys} key{'s' if keys != 1 else ''})" if keys else "OFF"
    upstream = settings.upstream_base_url or "not configured (chat requests answer 503)"
    if local_model:
        upstream += " (the bundled local model; Gemma terms apply to its weights)"
    err.print(f"[bold]Tether {__version__}[/bold]")
    err.print(f"  listening  http://{settings.host}:{settings.port}")
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


@app.command()
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
    setup_logging(settings.log_level)
    if settings.database_url.startswith("sqlite:///"):
        try:
            _held.append(claim_single_server(settings.database_url))
        except (RuntimeError, OSError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None

    async def prepare(store: Store) -> int:
        return await store.count_api_keys()

    try:
        keys = asyncio.run(_with_store(settings, prepare))
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not keys and not settings.loopback_only:
        err.print(
            f"[red]error:[/red] refusing to listen on {settings.host} without API keys: "
            "create one with `tether keys create` or bind to 127.0.0.1"
        )
        raise typer.Exit(2)
    _check_port_free(settings)
    settings, local_server = _start_local_model(settings)
    _banner(settings, keys, local_server is not None)
    try:
        serving.run(create_app(settings), settings)
    finally:
        if local_server is not None:
            local_server.stop()


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


@app.command()
def migrate(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Create or upgrade the database schema."""
    settings = load_settings(config, database_url=database_url)

    async def run(store: Store) -> None:
        return None

    asyncio.run(_with_store(settings, run))
    err.print(f"database {settings.database_url} is up to date")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to")] = OPEN_TENANT,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create an API key. The key is printed once, alone on the last line; only its hash is kept.

    The first key ends open mode: from then on every request needs a key, and the conversations
    made without one belong to tenant 'default' (reach them with a key of that tenant)."""
    settings = load_settings(config, database_url=database_url)
    key = new_key()

    async def run(store: Store) -> tuple[int, bool]:
        keys = await store.count_api_keys()
        await store.add_api_key(tenant, hash_key(key), key[:7])
        opened = bool(await store.list_conversations(OPEN_TENANT, 1)) if not keys else False
        return keys, opened

    before, opened = asyncio.run(_with_store(settings, run))
    if not before:
        err.print(
            "[bold]This is the first key: open mode ends.[/bold] Every request now needs "
            "'Authorization: Bearer <key>' (a running server notices within seconds)."
        )
        if opened and tenant != OPEN_TENANT:
            err.print(
                f"[yellow]The conversations made in open mode belong to tenant {OPEN_TENANT!r}, "
                f"not {tenant!r}: this key does not reach them. To keep using them, create a key "
                f"for that tenant too: tether keys create --tenant {OPEN_TENANT}[/yellow]"
            )
        elif opened:
            err.print("The conversations made in open mode are reachable with this key.")
    print(f"created a key for tenant {tenant!r}; store it now, it is not shown again:")
    print(key)


@keys_app.command("list")
def keys_list(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """List API keys: prefix, tenant, when created and revoked (keys themselves are not kept)."""
    settings = load_settings(config, database_url=database_url)

    async def run(store: Store) -> Any:
        return await store.list_api_keys()

    rows = asyncio.run(_with_store(settings, run))
    if not rows:
        err.print("no API keys: the server runs open (loopback only); create one with "
                  "`tether keys create --tenant NAME`")  # fmt: skip
        return
    table = Table("prefix", "tenant", "created", "revoked")
    for k in rows:
        table.add_row(f"{k.prefix}…", k.tenant_id, _when(k.created_at), _when(k.revoked_at))
    Console().print(table)


def _when(at: float | None) -> str:
    return "" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key, or its first 7 characters (tk_XXXX)")],
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Revoke an API key, named by the key itself or its 7-character prefix.

    A running server stops accepting it within 30 seconds. Revoking every key does not turn
    authentication off."""
    settings = load_settings(config, database_url=database_url)
    key = key.strip()
    if not key.startswith(KEY_PREFIX) or len(key) < 7:
        err.print(f"[red]error:[/red] expected a key or its first 7 characters ({KEY_PREFIX}XXXX)")
        raise typer.Exit(2)
    prefix, digest = key[:7], (hash_key(key) if len(key) > 7 else None)

    async def run(store: Store) -> int:
        return await store.revoke_api_key(prefix, digest)

    matched = asyncio.run(_with_store(settings, run))
    if matched == 0:
        err.print(f"[red]error:[/red] no active key matches {prefix}…")
        raise typer.Exit(1)
    if matched > 1:
        err.print(
            f"[red]error:[/red] {matched} active keys start with {prefix}: give the whole key; "
            "nothing was revoked"
        )
        raise typer.Exit(1)
    print(f"revoked the key {prefix}…")


@conv_app.command("list")
def conversations_list(
    tenant: Annotated[str, typer.Option(help="Tenant to list")] = OPEN_TENANT,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 50,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """List a tenant's conversations, most recently updated first."""
    settings = load_settings(config, database_url=database_url)

    async def run(store: Store) -> Any:
        return await store.list_conversations(tenant, limit)

    rows = asyncio.run(_with_store(settings, run))
    table = Table("id", "title", "messages", "turns", "forked from")
    for c in rows:
        fork = f"{c.forked_from_id}@{c.forked_from_seq}" if c.forked_from_id else ""
        table.add_row(c.id, c.title or "", str(c.last_seq), str(c.turn_count), fork)
    Console().print(table)


@conv_app.command("show")
def conversations_show(
    conversation_id: str,
    tenant: Annotated[str, typer.Option(help="Tenant owning it")] = OPEN_TENANT,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Print a conversation's full transcript."""
    settings = load_settings(config, database_url=database_url)

    async def run(store: Store) -> Any:
        conv = await store.resolve(tenant, conversation_id)
        return None if conv is None else await store.load_messages(conv.pk)

    messages = asyncio.run(_with_store(settings, run))
    if messages is None:
        err.print(f"no conversation {conversation_id!r} in tenant {tenant!r}")
        raise typer.Exit(1)
    for m in messages:
        print(f"[{m.seq}] {m.role}: {m.content if m.content is not None else m.tool_calls}")


@conv_app.command("alias")
def conversations_alias(
    conversation_id: str,
    alias: str,
    tenant: Annotated[str, typer.Option(help="Tenant owning it")] = OPEN_TENANT,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Make ALIAS (e.g. the id of an imported session) resolve to CONVERSATION_ID."""
    settings = load_settings(config, database_url=database_url)
    try:
        check_conversation_id(alias, "alias")
    except TetherError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None

    async def run(store: Store) -> str | None:
        conv = await store.resolve(tenant, conversation_id)
        if conv is None:
            return f"no conversation {conversation_id!r} in tenant {tenant!r}"
        if await store.resolve(tenant, alias) is not None:
            return f"{alias!r} already names a conversation in tenant {tenant!r}"
        await store.add_alias(tenant, alias, conv.pk)
        return None

    problem = asyncio.run(_with_store(settings, run))
    if problem:
        err.print(f"[red]error:[/red] {problem}")
        raise typer.Exit(1)
    print(f"{alias} -> {conversation_id}")


@local_app.command("status")
def local_status() -> None:
    """Is the bundled local model installed, and where is its file?"""
    state = local.status()
    print(f"llama-cpp-python: {'installed' if state.server_installed else 'missing'}")
    print(f"model package:    {'installed' if state.model_installed else 'missing'}")
    print(f"model file:       {state.model_path or 'not assembled yet (first serve does it)'}")
    print(f"status:           {state.detail}")
    if not state.installed:
        raise typer.Exit(1)


@local_app.command("path")
def local_path() -> None:
    """Print the model file's path (assembling it from the package if needed)."""
    if not local.status().model_installed:
        err.print("the model package is missing: pip install 'tether[local]'")
        raise typer.Exit(1)
    print(local.ensure_model())


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    app()
