"""CLI command: quickstart."""

import typer


def register(app: typer.Typer) -> None:
    """Adds this capability's commands to the lmforge app."""
