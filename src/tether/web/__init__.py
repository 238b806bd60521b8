"""The web dashboard at `/ui`: server-rendered pages (Jinja2 templates, a little JavaScript, every
asset in this package) over the engine's conversation and search functions. Signs in by API key
into its own session cookie (session.py); api/app.py mounts `routes`."""

from __future__ import annotations

from tether.web.routes import routes

__all__ = ["routes"]
