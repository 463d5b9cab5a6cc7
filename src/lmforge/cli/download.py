"""`lmforge download MODEL`: fetch what loading a hub model needs into the HF cache, scan it, say where it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from lmforge.hub.download import DownloadReport


def download_command(
    model: Annotated[str, typer.Argument(help="A hub id: org/name or org/name@revision.")],
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit (default: main).")] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            help="Fetch only the files matching this glob (repeatable), e.g. '*Q4_K_M.gguf'; default: "
            "what loading needs (safetensors preferred, configs, tokenizer).",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Hub token (default: HF_TOKEN, else the stored `hf auth login`).")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Cache folder (default: HF_HUB_CACHE, else $HF_HOME/hub).")
    ] = None,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="Also fetch the Python files the repo ships (they run only with --trust-remote-code).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Download a model from the hub, scan every file, and print where the files are, their size, format and verdict.

    Exit code as `lmforge scan`: 0 all safe, 1 something unsafe, 2 something unreadable.
    """
    from lmforge.hub.download import download_model

    report = download_model(
        model, revision=revision, include=include, token=token, cache_dir=cache_dir, trust_remote_code=trust_remote_code
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _render(report)
    raise typer.Exit(report.exit_code)


def _render(report: DownloadReport) -> None:
    from rich.console import Console
    from rich.filesize import decimal
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    styles = {"safe": "green", "unsafe": "bold red", "error": "yellow"}
    table = Table(
        title=f"{escape(report.repo_id)} @ {escape(report.revision)} (commit {report.commit[:12]})",
        title_justify="left",
        show_edge=False,
        header_style="bold",
    )
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("format")
    table.add_column("scan")
    for item in report.files:
        verdict = f"[{styles.get(item.verdict, 'yellow')}]{item.verdict}[/]"
        if item.findings:
            verdict += f": {escape(', '.join(item.findings[:3]))}"
        table.add_row(escape(item.name), decimal(item.size_bytes), item.format, verdict)
    console.print(table)
    console.print(
        f"in {escape(report.folder)}: {len(report.files)} file(s), {decimal(report.total_size_bytes)}; "
        f"scan: [{styles.get(report.verdict, 'yellow')}]{report.verdict}[/]"
    )
    if report.skipped:
        more = f" and {len(report.skipped) - 8} more" if len(report.skipped) > 8 else ""
        console.print(f"left on the hub (not needed to load it): {escape(', '.join(report.skipped[:8]) + more)}")
    for note in report.notes:
        console.print(f"note: {escape(note)}")


def register(app: typer.Typer) -> None:
    """Adds this capability's commands to the lmforge app."""
    app.command("download")(download_command)
