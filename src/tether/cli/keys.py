"""`tether keys create | list | revoke`: API keys, each belonging to one tenant."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tether.api.auth import KEY_PREFIX, OPEN_TENANT, hash_key, new_key
from tether.cli.common import ConfigOpt, DbOpt, err, when, with_store
from tether.config import load_settings
from tether.store.base import Store

keys_app = typer.Typer(
    help="Manage API keys (each key belongs to one tenant).", no_args_is_help=True
)


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

    before, opened = asyncio.run(with_store(settings, run))
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

    rows = asyncio.run(with_store(settings, run))
    if not rows:
        err.print("no API keys: the server runs open (loopback only); create one with "
                  "`tether keys create --tenant NAME`")  # fmt: skip
        return
    table = Table("prefix", "tenant", "created", "revoked")
    for k in rows:
        table.add_row(f"{k.prefix}…", k.tenant_id, when(k.created_at), when(k.revoked_at))
    Console().print(table)


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

    matched = asyncio.run(with_store(settings, run))
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
