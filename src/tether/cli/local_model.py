"""`tether local-model status | path`: the bundled local model (tether[local])."""

from __future__ import annotations

import typer

from tether.cli.common import err
from tether.upstream import local

local_app = typer.Typer(help="The bundled local model (tether\\[local]).", no_args_is_help=True)


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
