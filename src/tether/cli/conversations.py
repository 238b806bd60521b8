"""`tether conversations ls | show | export | import | rm | alias`: stored conversations, over
the engine code the REST API uses (engine/conversations.py, engine/export.py). Run on the
database file directly: a server running on it meanwhile is fine (SQLite serialises writers),
but a deleted conversation stays in that server's view cache until its next turn reads it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import orjson
import typer
from rich.console import Console
from rich.table import Table

from tether.cli.common import ConfigOpt, DbOpt, err, when, with_store
from tether.config import Settings, load_settings
from tether.engine import conversations, export
from tether.engine.ids import check_conversation_id
from tether.engine.service import Engine
from tether.errors import TetherError
from tether.keys import OPEN_TENANT
from tether.store.base import ConversationFilter, Store

T = TypeVar("T")
conv_app = typer.Typer(help="List, show, export, import and delete stored conversations.",
                       no_args_is_help=True)  # fmt: skip
TenantOpt = Annotated[str, typer.Option(help="The tenant (an API key's) they belong to")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="File (default stdout)")]


def _run(settings: Settings, fn: Callable[[Engine], Awaitable[T]]) -> T:
    """Run `fn` with an engine on the store (no upstream); a TetherError is one line, exit 1."""

    refused: list[TetherError] = []  # (with_store takes a TetherError for the database's)

    async def on(store: Store) -> T | None:
        try:
            return await fn(Engine(store, None, settings))
        except TetherError as exc:
            refused.append(exc)
            return None

    result = asyncio.run(with_store(settings, on))
    if refused:
        err.print(f"[red]error:[/red] {refused[0].message}", highlight=False)
        raise typer.Exit(1)
    return cast(T, result)  # None only with `refused`


@conv_app.command("ls")
def conversations_ls(
    tenant: TenantOpt = OPEN_TENANT,
    limit: Annotated[int, typer.Option(help="How many, newest activity first")] = 50,
    title: Annotated[str | None, typer.Option(help="Only titles containing this")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's")] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """List a tenant's conversations, most recent activity first."""
    settings = load_settings(config, database_url=database_url)
    filters = ConversationFilter(title=title, model=model) if title or model else None
    page = _run(settings, lambda e: conversations.list_page(e, tenant, limit=limit,
                                                             filters=filters))  # fmt: skip
    table = Table("id", "title", "messages", "turns", "epoch", "forked from", "updated")
    for c in page.items:
        fork = f"{c.forked_from_id}@{c.forked_from_seq}" if c.forked_from_id else ""
        table.add_row(c.id, c.title or "", str(c.last_seq), str(c.turn_count), str(c.epoch),
                      fork, when(c.updated_at))  # fmt: skip
    Console().print(table)
    if page.has_more:
        err.print(f"(more than {limit}: use --limit)")


conv_app.command("list", hidden=True)(conversations_ls)  # the name before `ls`


@conv_app.command("show")
def conversations_show(
    conversation_id: str,
    tenant: TenantOpt = OPEN_TENANT,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Print a conversation's transcript as Markdown, compaction checkpoints marked."""
    settings = load_settings(config, database_url=database_url)

    async def run(e: Engine) -> str:
        return await export.export_markdown(e, await conversations.get(e, tenant, conversation_id))

    print(_run(settings, run))


@conv_app.command("export")
def conversations_export(
    conversation_id: str,
    tenant: TenantOpt = OPEN_TENANT,
    fmt: Annotated[str, typer.Option("--format", help="json (re-importable) or markdown")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default stdout)")
    ] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Write a conversation's whole transcript, as GET …/export answers it."""
    if fmt not in ("json", "markdown"):
        err.print("[red]error:[/red] --format is json or markdown")
        raise typer.Exit(2)
    settings = load_settings(config, database_url=database_url)

    async def run(e: Engine) -> bytes:
        conv = await conversations.get(e, tenant, conversation_id)
        if fmt == "json":
            return export.dumps(await export.export_json(e, conv))
        return (await export.export_markdown(e, conv)).encode()

    data = _run(settings, run)
    if output is None:
        sys.stdout.buffer.write(data + b"\n")
    else:
        output.write_bytes(data)
        err.print(f"wrote {output} ({len(data):,} bytes)")


@conv_app.command("import")
def conversations_import(
    path: Path,
    tenant: TenantOpt = OPEN_TENANT,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Import a JSON export (`tether conversations export`, GET …/export) into a tenant; a
    conversation whose id or an alias is already there is left alone."""
    try:
        record = export.imported(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
        err.print(f"[red]error:[/red] {path}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    settings = load_settings(config, database_url=database_url)

    async def run(e: Engine) -> Any:
        await e.store.ensure_tenant(tenant)
        return await e.store.import_conversation(tenant, record)

    made = _run(settings, run)
    if made is None:
        print(f"{record.id}: already in tenant {tenant!r} (it, or one of its aliases); skipped")
    else:
        print(f"{made.id}: imported into tenant {tenant!r} ({made.last_seq} messages)")


@conv_app.command("rm")
def conversations_rm(
    conversation_id: str,
    tenant: TenantOpt = OPEN_TENANT,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Delete a conversation and everything it owns (its forks stay)."""
    if not yes:
        typer.confirm(f"Delete {conversation_id!r} in tenant {tenant!r}, for good?", abort=True)
    settings = load_settings(config, database_url=database_url)

    async def run(e: Engine) -> dict[str, int]:
        return await conversations.delete(e, await conversations.get(e, tenant, conversation_id))

    removed = _run(settings, run)
    print(f"deleted {conversation_id}: " + ", ".join(f"{v} {k}" for k, v in removed.items() if v))


@conv_app.command("alias")
def conversations_alias(
    conversation_id: str,
    alias: str,
    tenant: TenantOpt = OPEN_TENANT,
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

    async def run(e: Engine) -> None:
        conv = await conversations.get(e, tenant, conversation_id)
        if await e.store.resolve(tenant, alias) is not None:
            raise TetherError(409, "conversation_exists", f"{alias!r} already names one")
        await e.store.add_alias(tenant, alias, conv.pk)

    _run(settings, run)
    print(f"{alias} -> {conversation_id}")
