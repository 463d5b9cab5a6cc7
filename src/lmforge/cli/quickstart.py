"""CLI command: `lmforge quickstart [--out DIR] [--resume] [--fast] [--json]`, a thin wrapper over
lmforge.quickstart.run_quickstart."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _quiet_libraries() -> None:
    """Library progress bars and deprecation notices would bury the stage headers and rich bars."""
    import warnings

    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Folder for every stage, the report and exports."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted quickstart in --out."),
    fast: bool = typer.Option(False, "--fast", help="A 10-20 second smoke run: tiny sizes, numbers show no learning."),
    as_json: bool = typer.Option(False, "--json", help="Print every stage's metrics as JSON."),
) -> None:
    """The whole life of a tiny LLM on a CPU, nothing downloaded: tokenizer, pretrain, plan, SFT (LoRA),
    reward model, DPO, RLHF, held-out evaluation after each stage, safetensors + GGUF export, chat
    samples, and OUT/report.md with plots."""
    from lmforge.quickstart import run_quickstart

    _quiet_libraries()
    result = run_quickstart(out, resume=resume, fast=fast, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"quickstart ({result.recipe}): {result.seconds:.0f} s", title_justify="left")
    for column in ("stage", "exact match", "pref. acc.", "pref. acc. (SFT's mistakes)", "reward-model acc.", "seconds"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for name, record in result.stages.items():
        cells = [
            f"{value:.1%}" if value is not None else "—"
            for value in (
                record.exact_match,
                record.preference_accuracy,
                record.mistake_preference_accuracy,
                record.reward_accuracy,
            )
        ]
        table.add_row(name, *cells, f"{record.seconds:.1f}")
    console = Console()
    console.print(table)
    console.print(f"report: {result.report_path}")


def register(app: typer.Typer) -> None:
    """Adds this capability's commands to the lmforge app."""
    app.command("quickstart")(quickstart)
