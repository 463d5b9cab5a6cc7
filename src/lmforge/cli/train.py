"""CLI commands of the train capability: `lmforge train CONFIG.yaml [--set k=v ...] [--resume] [--nproc N]
[--prepare-only]`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer


def train(
    config: Path = typer.Argument(None, help="YAML config (see --print-config STAGE and examples/)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set train.max_steps=100 (repeatable)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue this run (config.out) from its last complete checkpoint."
    ),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes (GPUs) to launch through accelerate."),
    print_config: str = typer.Option(None, "--print-config", metavar="STAGE", help="Print a commented default config."),
    deepspeed: str = typer.Option(
        None,
        "--deepspeed",
        help="With --nproc: zero2, zero2-offload, zero3, zero3-offload, or plan (the planner's layout).",
    ),
    fsdp: bool = typer.Option(False, "--fsdp", help="With --nproc: shard with FSDP instead of DDP."),
    prepare_only: bool = typer.Option(
        False,
        "--prepare-only",
        help="Only load, validate and tokenize the data into RUN/data and print its summary; run once before "
        "`accelerate launch` on a cluster.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run result (or the data summary) as JSON."),
) -> None:
    """Train a model: pretrain, sft, rm, dpo, kto, orpo, rlhf, distill, classify or mlm, from one YAML config."""
    from lmforge.errors import UserInputError
    from lmforge.train import config as train_config

    if print_config is not None:
        typer.echo(train_config.print_config(print_config), nl=False)
        return
    if config is None:
        raise UserInputError("give a config file (lmforge train CONFIG.yaml) or --print-config STAGE")
    resolved = train_config.load_config(config, set_)  # every config error, before anything launches
    if prepare_only:
        from lmforge.train.prepare import prepare_run

        prepared = prepare_run(resolved)
        _print_data_summary(prepared.summary, prepared.reused, Path(resolved.out) / "data", as_json)
        return
    if resume:
        from lmforge.train.run import finished_run, nothing_to_resume

        done = finished_run(resolved)
        if done is not None:
            typer.echo(json.dumps(done.to_dict(), indent=2) if as_json else nothing_to_resume(done, resolved))
            return
    if nproc > 1 or deepspeed or fsdp:
        from lmforge.train.launch import launch

        raise typer.Exit(
            launch(config, set_, resume=resume, nproc=nproc, deepspeed=deepspeed, fsdp=fsdp, progress=not as_json)
        )

    from lmforge.train.run import run_training

    result = run_training(resolved, resume=resume, progress=not as_json)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under --nproc every process trains; one reports
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.stage} / {result.method}: {result.steps} steps", show_header=False)
    for key, value in result.final_metrics.items():
        table.add_row(key, f"{value:.6g}")
    Console().print(table)


def _print_data_summary(summary: Any, reused: bool, folder: Path, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"folder": str(folder), "reused": reused, **summary.to_dict()}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{folder}: {summary.stage} data ({summary.kind}), max_len {summary.max_len}, "
        f"template {summary.template or 'none'}, fingerprint {summary.fingerprint}"
    )
    columns = (
        "examples_in",
        "rejected",
        "dropped_examples",
        "examples_out",
        "truncated_examples",
        "sequences",
        "tokens",
        "trained_tokens",
    )
    table.add_column("split")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for name, split in summary.splits.items():
        values = [getattr(split, column) for column in columns]
        table.add_row(name, *("-" if value is None else f"{value:,}" for value in values))
    Console().print(table)
    Console().print(
        f"{'reused: the fingerprint matches' if reused else 'prepared'}; every training process of "
        "this run reads it instead of tokenizing"
    )
    if not summary.tokenized:
        Console().print(
            f"stage {summary.stage}: TRL tokenizes these validated sets at train time "
            "(once: datasets caches it beside them)"
        )


def register(app: typer.Typer) -> None:
    """Adds this capability's commands to the lmforge app."""
    app.command("train")(train)
