"""Tether: an OpenAI-compatible agent server with stable, durable conversations."""

__version__ = "0.1.0"
