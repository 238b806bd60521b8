"""`tether serve | migrate | version | keys | conversations | import | tools | local-model`: one
module per command group (serve.py: serve and migrate, copying.py: migrate --from; keys.py;
conversations.py; importing.py: import hermes; tools.py; local_model.py), the shared options
and the store opener in common.py."""

from __future__ import annotations

import typer

from tether import __version__
from tether.cli.conversations import conv_app
from tether.cli.importing import import_app
from tether.cli.keys import keys_app
from tether.cli.local_model import local_app
from tether.cli.serve import migrate, serve, setup_logging
from tether.cli.tools import tools_app

__all__ = ["app", "main", "setup_logging"]

app = typer.Typer(
    help="Tether: an OpenAI-compatible agent server whose conversations never lose the thread.",
    epilog="Every setting is also an environment variable TETHER_<NAME> (e.g. TETHER_HOST, "
    "TETHER_PORT, TETHER_DATABASE_URL, TETHER_UPSTREAM_BASE_URL, TETHER_UPSTREAM_API_KEY, "
    "TETHER_DEFAULT_MODEL) or a key in the TOML file given by --config / TETHER_CONFIG. "
    "The README lists them all.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(keys_app, name="keys")
app.add_typer(conv_app, name="conversations")
app.add_typer(import_app, name="import")
app.add_typer(tools_app, name="tools")
app.add_typer(local_app, name="local-model")
app.command()(serve)
app.command()(migrate)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    app()
