"""`lmforge ui`: serve the web UI (lmforge.ui) until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import typer


def ui_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --auth."),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="Port to serve on."),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Run folder: runs are listed from and started into it."),
    auth: str = typer.Option(None, "--auth", metavar="USER:PASS", help="Require this login (needed off loopback)."),
    allow: list[Path] = typer.Option(
        None, "--allow", help="A folder the pickers may read (repeatable; default: the current folder)."
    ),
) -> None:
    """Open the lmforge web UI: plan, data, train, runs, evaluate, chat and files in one page."""
    from lmforge.ui.app import serve

    serve(host=host, port=port, runs=str(runs), auth=auth, allow=[str(p) for p in allow] if allow else None)


def register(app: typer.Typer) -> None:
    """Adds `lmforge ui` to the lmforge app."""
    app.command("ui")(ui_command)
