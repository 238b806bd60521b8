"""`tether conversations list | show | alias`: stored conversations, read straight from the
store."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tether.api.auth import OPEN_TENANT
from tether.cli.common import ConfigOpt, DbOpt, err, with_store
from tether.config import load_settings
from tether.engine.ids import check_conversation_id
from tether.errors import TetherError
from tether.store.base import Store

conv_app = typer.Typer(help="Inspect stored conversations.", no_args_is_help=True)


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

    rows = asyncio.run(with_store(settings, run))
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

    messages = asyncio.run(with_store(settings, run))
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

    problem = asyncio.run(with_store(settings, run))
    if problem:
        err.print(f"[red]error:[/red] {problem}")
        raise typer.Exit(1)
    print(f"{alias} -> {conversation_id}")
