"""`tether tools list`: every server-side tool the configuration gives the model, where it comes
from, and whether its MCP server is up."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tether.cli.common import ConfigOpt
from tether.config import load_settings
from tether.tools import registry

tools_app = typer.Typer(help="Server-side tools (built-in and MCP).", no_args_is_help=True)


@tools_app.command("list")
def tools_list(
    config: ConfigOpt = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the MCP servers to come up")
    ] = 15.0,
) -> None:
    """List every tool, its source and whether that source is up.

    The MCP servers are started here, from the same configuration as `tether serve` (the
    config file, TETHER_MCP_SERVERS, TETHER_BUILTIN_TOOLS), and asked for their tools; a server
    that does not come up within --wait seconds is shown as down."""
    settings = load_settings(config)
    reg = registry.build(settings)
    if reg is None:
        print("no tools configured (TETHER_BUILTIN_TOOLS, TETHER_MCP_SERVERS): see docs/tools.md")
        return

    async def run() -> Table:
        await reg.start()
        deadline = time.monotonic() + wait
        # a source says whether it is up, it has no event to wait on: poll it
        while not all(s.up() for s in reg.sources) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        table = Table("tool", "source", "state", "approval", "timeout", "description")
        try:
            for source in reg.sources:
                origin = "builtin" if source.name == "builtin" else f"mcp:{source.name}"
                if not source.up():
                    table.add_row("—", origin, "[red]down[/red]", "", "", "its tools are absent")
                for spec in source.tools():
                    table.add_row(
                        spec.name,
                        spec.source,
                        "[green]up[/green]",
                        "always" if spec.approval else "never",
                        f"{spec.timeout:g} s",
                        spec.description.splitlines()[0][:60] if spec.description else "",
                    )
        finally:
            await reg.close()
        return table

    Console(width=160).print(asyncio.run(run()))
