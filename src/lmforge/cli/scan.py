"""CLI commands: scan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from lmforge.files.scan import ScanReport


def scan(
    paths: list[Path] = typer.Argument(
        ...,
        metavar="PATH",
        help="Files or directories (scanned recursively), or hub "
        "ids org/name[@revision]: the files loading would fetch.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also list every global each file imports."),
) -> None:
    """Decide whether model files are safe to load, without running any of them.

    Exit code 0: every file is safe; 1: something would run code when loaded; 2: something could
    not be proven safe (ambiguous archive, unparseable pickle, a limit reached, a symlink leaving
    the folder) or read, and nothing is unsafe.
    """
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from lmforge.files.scan import collect_targets, scan_targets
    from lmforge.hub.reference import local_paths

    targets = collect_targets(local_paths(paths))
    if as_json or len(targets) < 2:
        report = scan_targets(targets)
    else:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), transient=True, console=Console(stderr=True)
        ) as progress:
            task = progress.add_task("scanning", total=len(targets))
            report = scan_targets(targets, on_file=lambda path: progress.update(task, advance=1, description=str(path)))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _render(report, verbose)
    raise typer.Exit(report.exit_code)


def _shown(path: str) -> str:
    """A path relative to the working directory when it is inside it (shorter tables)."""
    import os

    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _render(report: ScanReport, verbose: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    styles = {"safe": "green", "unsafe": "bold red", "unproven": "yellow", "error": "yellow"}
    table = Table(show_edge=False, header_style="bold")
    table.add_column("file", overflow="fold")
    for column in ("format", "verdict", "findings", "pickles"):
        table.add_column(column, justify="right" if column in ("findings", "pickles") else "left", no_wrap=True)
    for item in report.files:
        table.add_row(
            escape(_shown(item.path)),
            item.format,
            f"[{styles[item.verdict]}]{item.verdict}[/]",
            str(len(item.findings)),
            str(item.pickle_streams),
        )
    console.print(table)
    for item in report.files:
        if item.error:
            console.print(f"[yellow]{escape(_shown(item.path))}[/]: {escape(item.error)}")
        for finding in item.findings:
            where = " ".join(
                part
                for part in (
                    f"member {finding.member}" if finding.member else "",
                    f"byte {finding.offset}" if finding.offset is not None else "",
                    finding.opcode or "",
                )
                if part
            )
            colour = "red" if finding.severity == "unsafe" else "yellow"
            console.print(
                f"[{colour}]{escape(_shown(item.path))}[/] {escape(f'[{finding.kind}]')} {escape(finding.message)}"
                + (f" ({escape(where)})" if where else "")
            )
        if verbose and item.globals:
            console.print(f"{escape(_shown(item.path))} imports: {escape(', '.join(item.globals))}")
    unsafe, unproven, errors = len(report.unsafe), len(report.unproven), len(report.errors)
    safe = len(report.files) - unsafe - unproven - errors
    summary = (
        f"{len(report.files)} file(s): {safe} safe, {unsafe} unsafe, {unproven} not proven safe, {errors} unreadable"
    )
    console.print(f"[{'bold red' if unsafe else 'yellow' if unproven or errors else 'green'}]{summary}[/]")


def register(app: typer.Typer) -> None:
    """Adds this capability's commands to the lmforge app."""
    app.command("scan")(scan)
