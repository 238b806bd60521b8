"""`tether import hermes PATH [--tenant T]`: every session of a Hermes Agent `state.db` as
Tether conversations (docs/hermes.md). The file is read and checked whole before the database
is opened: a bad file is one line on stderr, exit code 1, nothing written. Importing it again
writes nothing and says so."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tether.cli.common import ConfigOpt, DbOpt, err, with_store
from tether.config import load_settings
from tether.importing import HermesImport, HermesImportError, read_hermes
from tether.importing.write import WriteReport, write_conversations
from tether.keys import OPEN_TENANT
from tether.store.base import Store

import_app = typer.Typer(help="Import conversations from elsewhere.", no_args_is_help=True)


@import_app.command("hermes")
def import_hermes(
    path: Annotated[Path, typer.Argument(help="Hermes' state.db (e.g. ~/.hermes/state.db)")],
    tenant: Annotated[str, typer.Option(help="Tenant to import into")] = OPEN_TENANT,
    system_prompt: Annotated[
        bool,
        typer.Option(
            "--system-prompt/--no-system-prompt",
            help="Keep each session's Hermes system prompt as the conversation's",
        ),
    ] = True,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Import every session of a Hermes state.db.

    A compression chain becomes one conversation named by its first session's id, and every
    other id of the chain becomes an alias, so a bridge holding any of them continues it. Forks
    become forks. Stop Hermes first (or import a copy of the file)."""
    settings = load_settings(config, database_url=database_url)
    try:
        result = read_hermes(path, system_prompt=system_prompt)
    except HermesImportError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None

    async def run(store: Store) -> WriteReport:
        columns = (
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("messages"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err) as bar:
            task = bar.add_task("import", total=result.messages)
            return await write_conversations(
                store, tenant, result.conversations, lambda n: bar.advance(task, n)
            )

    report = asyncio.run(with_store(settings, run))
    show_summary(result, report, tenant)


def show_summary(result: HermesImport, report: WriteReport, tenant: str) -> None:
    out = Console(highlight=False)
    table = Table("", "count", title=escape(f"Hermes import into tenant {tenant!r}"))
    table.add_row("sessions read", str(result.sessions_read))
    table.add_row(
        "conversations imported", f"{len(report.imported)} of {len(result.conversations)}"
    )
    table.add_row("messages", str(report.messages))
    table.add_row("aliases", str(report.aliases))
    table.add_row("checkpoints", str(report.checkpoints))
    table.add_row("skipped: already imported", str(len(report.already)))
    reasons: dict[str, int] = {}
    for s in result.skipped:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    for reason, n in reasons.items():
        table.add_row(f"skipped sessions: {reason}", str(n))
    out.print(table)
    lines = [f"skipped {s.session_id}: {s.reason}" for s in result.skipped]
    lines += [f"note: {note}" for note in result.notes]
    if result.conversations and not report.imported:
        lines.append(f"nothing imported: every conversation of this file is already in {tenant!r}")
    elif not result.conversations:
        lines.append("nothing imported: the file holds no conversation to import")
    for line in lines:
        out.print(line, markup=False, soft_wrap=True)
