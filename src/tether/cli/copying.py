"""`tether migrate --from sqlite:///path.db --database postgresql://…`: a SQLite database copied
into PostgreSQL (store/postgres/copy.py) under a progress bar, then each table's rows on both
sides as a table. A refusal (a conflicting target, an old source schema, a database not
reached), or counts that differ, is one line on stderr and exit code 1; Ctrl-C stops it, and
running the same command again continues."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tether.cli.common import err

if TYPE_CHECKING:
    from tether.store.postgres.copy import Report


def shown(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def copy_into_postgres(source: str, target: str) -> None:
    try:
        from tether.store.postgres.copy import CopyRefused, copy_database
    except ImportError as exc:  # asyncpg is an extra
        fail(f"PostgreSQL needs asyncpg: pip install 'tether[postgres]' ({exc})")
    if not target.startswith(("postgres://", "postgresql://")):
        fail(f"--from copies into PostgreSQL: --database must be a postgresql:// URL, not "
             f"{shown(target)}")  # fmt: skip
    columns = (
        TextColumn("copying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("conversations"),
        TimeElapsedColumn(),
    )
    bar = Progress(*columns, console=err)
    task = bar.add_task("copy", total=None)

    def start(total: int) -> None:  # the bar shows once both databases passed their checks
        bar.update(task, total=total)
        bar.start()

    try:
        report = asyncio.run(copy_database(source, target, start, lambda n: bar.advance(task, n)))
    except CopyRefused as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to continue the copy")
        raise typer.Exit(130) from None
    finally:
        bar.stop()
    show_counts(report, source, target)


def show_counts(report: Report, source: str, target: str) -> None:
    out = Console(highlight=False)
    table = Table("table", "sqlite", "postgresql", "", title="rows on both sides")
    for name, (mine, theirs) in report.counts.items():
        table.add_row(name, str(mine), str(theirs), "ok" if mine == theirs else "DIFFERENT")
    out.print(table)
    out.print(
        f"copied {report.copied} conversation(s) ({report.messages} messages); "
        f"{report.skipped} already there",
        markup=False,
    )
    wrong = report.mismatched()
    if wrong:
        fail(f"the row counts differ in {', '.join(wrong)}")
    out.print(f"{source} is copied into {shown(target)}", markup=False, soft_wrap=True)
