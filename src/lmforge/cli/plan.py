"""`lmforge plan`, `lmforge models`, `lmforge gpus`."""

import typer


def register(app: typer.Typer) -> None:
    """Filled in by the planner work."""
