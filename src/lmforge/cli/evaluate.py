"""`lmforge eval`: thin wrapper over lmforge.evaluate."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lmforge.cli.data import ColumnsOpt, KindOpt, OnErrorOpt
from lmforge.cli.generate import DeviceMapOpt, TrustPickleOpt, TrustRemoteCodeOpt

if TYPE_CHECKING:
    from lmforge.evaluate.pairs import MinedPairs
    from lmforge.evaluate.report import EvalReport
    from lmforge.evaluate.run import DataReading


def _summary_table(report: EvalReport) -> Any:
    from rich.table import Table

    table = Table(title=f"{report.task} on {report.data}", title_justify="left")
    table.add_column("metric")
    table.add_column(report.model, justify="right")
    if report.compare_summary is not None:
        table.add_column(report.compare_model or "compare", justify="right")
    for key, value in report.summary.items():
        if not isinstance(value, int | float):
            continue
        cells = [key, f"{value:.4g}"]
        if report.compare_summary is not None:
            other = report.compare_summary.get(key)
            cells.append(f"{other:.4g}" if isinstance(other, int | float) else "")
        table.add_row(*cells)
    return table


def eval_command(
    model: Annotated[
        str,
        typer.Argument(
            help="A model folder, a training run folder, a LoRA adapter folder, or a hub "
            "id org/name[@revision] (downloaded into the HF cache)."
        ),
    ],
    data: Annotated[
        str | None, typer.Option(help="Evaluation data: a file, folder or builtin:NAME (test split).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="generation | classification | reward | perplexity (default: from the data's kind)."),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option(help="A second model scored in the same table; 'base' = the model MODEL was fine-tuned from."),
    ] = None,
    adapter: Annotated[str | None, typer.Option(help="A LoRA adapter applied on top of MODEL.")] = None,
    suite: Annotated[str | None, typer.Option(help="A built-in suite instead of --data: stress.")] = None,
    blind: Annotated[
        bool,
        typer.Option(
            "--blind",
            help="Suite with --compare: hide which model wrote each answer from reviewers (key in blind_key.csv).",
        ),
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: ./eval-<model name>).")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N examples.")] = None,
    split: Annotated[str | None, typer.Option(help="Which split of the data to read.")] = None,
    kind: KindOpt = None,
    columns: ColumnsOpt = None,
    on_error: OnErrorOpt = "fail",
    rejects: Annotated[
        Path | None,
        typer.Option(help="Where --on-error skip puts bad records (default: rejects.jsonl in the report folder)."),
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(
            help="builtin: arith sets: evaluate only these tasks, e.g. "
            "word_problem,sort,convert (the quickstart's three)."
        ),
    ] = None,
    extract: Annotated[
        str, typer.Option(help="Exact-match answer extraction: answer, exact, first-line, last-number, regex:PATTERN.")
    ] = "answer",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Most tokens per generated answer.")] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts generated together.")] = 8,
    preset: Annotated[str | None, typer.Option(help="Sample with this preset instead of greedy decoding.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sample at this temperature (0 = greedy).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed when sampling.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda (default: cuda when available).")] = None,
    device_map: DeviceMapOpt = None,
    quant: Annotated[
        str | None, typer.Option("--quant", help="Quantize MODEL (not --compare) while loading: int8 | nf4 | int4.")
    ] = None,
    mistakes_out: Annotated[
        Path | None,
        typer.Option(
            "--mistakes-out",
            help="Write a preference JSONL: each wrong answer rejected, the reference chosen (for dpo/rm).",
        ),
    ] = None,
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Measure a model: metrics, a per-example report, base-vs-tuned comparison, or the stress suite."""
    from lmforge.cli.generate import quiet_transformers
    from lmforge.errors import UserInputError
    from lmforge.generate.sampling import sampling_params

    quiet_transformers()
    if (data is None) == (suite is None):
        raise UserInputError("give exactly one of --data DATA or --suite stress")
    if quant is not None and suite is not None:
        raise UserInputError("--quant applies to --data evaluations; the stress suite loads models as they are")
    if mistakes_out is not None and (suite is not None or task not in (None, "generation")):
        raise UserInputError("--mistakes-out needs a generation evaluation of chat data (--data, task generation)")
    sampled = preset is not None or (temperature is not None and temperature > 0)
    params = (
        sampling_params(preset, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens)
        if sampled
        else sampling_params(temperature=0, max_new_tokens=max_new_tokens)
    )
    out_dir = out or Path(f"eval-{Path(model.rstrip('/')).name}")
    progress = sys.stderr.isatty() and not json_output
    if suite is not None:
        _run_suite(
            model,
            suite,
            adapter,
            compare,
            params,
            out_dir,
            device,
            json_output,
            progress,
            blind,
            {"trust_pickle": trust_pickle, "trust_remote_code": trust_remote_code},
            device_map,
        )
        return

    from lmforge.data.validate import on_error_policy
    from lmforge.evaluate.report import write_report
    from lmforge.evaluate.run import DataReading, evaluate_model

    assert data is not None  # exactly one of --data and --suite, checked above

    if on_error == "skip" and rejects is None:
        rejects = out_dir / "rejects.jsonl"
    reading = DataReading(
        kind=kind,
        columns=columns,
        on_error=on_error_policy(on_error),
        rejects_path=str(rejects) if rejects else None,
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else None,
    )
    report = evaluate_model(
        model,
        data,
        task=task,
        compare=compare,
        adapter=adapter,
        limit=limit,
        split=split,
        extract=extract,
        params=params,
        device=device,
        batch_size=batch_size,
        progress=progress,
        reading=reading,
        trust_pickle=trust_pickle,
        trust_remote_code=trust_remote_code,
        quant=quant,
        device_map=device_map,
    )
    paths = write_report(report, out_dir)
    mined = _write_mistakes(report, data, split, limit, reading, mistakes_out) if mistakes_out else None
    if json_output:
        extra = {"mistakes": {**mined.to_dict(), "file": str(mistakes_out)}} if mined else {}
        typer.echo(
            json.dumps({**report.to_dict(), "files": {k: str(v) for k, v in paths.items()}, **extra}, default=str)
        )
        return
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    console.print(_summary_table(report))
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    if report.extra.get("confusion_matrix"):
        labels = report.extra["labels"]
        console.print("confusion matrix (rows true, columns predicted): " + ", ".join(labels))
        for label, row in zip(labels, report.extra["confusion_matrix"]):
            console.print(f"  {label}: {row}")
    if report.outcomes:
        o = report.outcomes
        console.print(
            f"per example ({report.score_name}): {o['win']} wins, {o['loss']} losses, {o['tie']} ties "
            f"for {report.model} against {report.compare_model}"
        )
    console.print(f"report: {paths['report']}  rows: {paths['results']}")
    if mined is not None:
        console.print(
            f"mistakes: {mined.mistakes} of {mined.answers} answers wrong -> {len(mined.pairs)} preference "
            f"pairs in {mistakes_out}" + (f" ({mined.empty} empty answers skipped)" if mined.empty else "")
        )


def _write_mistakes(
    report: EvalReport, data: str, split: str | None, limit: int | None, reading: DataReading, path: Path
) -> MinedPairs:
    from lmforge.evaluate.pairs import pairs_from_mistakes, write_pairs
    from lmforge.evaluate.run import load_records

    mined = pairs_from_mistakes(report, load_records(data, split, limit, reading)[0])
    write_pairs(mined, path)
    return mined


def _run_suite(
    model: str,
    suite: str,
    adapter: str | None,
    compare: str | None,
    params: Any,
    out_dir: Path,
    device: str | None,
    json_output: bool,
    progress: bool,
    blind: bool,
    trust: dict[str, bool],
    device_map: str | None = None,
) -> None:
    from lmforge.evaluate.suites import run_suite, suite_cases, write_stress

    def run(on_case: Any = None) -> list[Any]:
        return run_suite(
            model,
            suite,
            adapter=adapter,
            compare=compare,
            params=params,
            device=device,
            device_map=device_map,
            on_case=on_case,
            **trust,
        )

    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"{suite} suite", total=len(suite_cases(suite)) * (2 if compare else 1))
            outputs = run(on_case=lambda: bar.advance(task))
    else:
        outputs = run()
    paths = write_stress(outputs, out_dir, blind_review=blind)
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "outputs": [] if blind else [asdict(o) for o in outputs],
                    "files": {k: str(v) for k, v in paths.items()},
                },
                ensure_ascii=False,
            )
        )
        return
    typer.echo(f"{len(outputs)} outputs for review: {paths['review']}")
    typer.echo(f"rubric sheet (score 1-5 per dimension): {paths['rubric']}")
    if "key" in paths:
        typer.echo(f"blind key (keep it from the reviewers): {paths['key']}")


def register(app: typer.Typer) -> None:
    """Adds this capability's commands to the lmforge app."""
    app.command("eval")(eval_command)
