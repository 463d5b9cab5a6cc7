"""`lmforge compress`: thin wrapper over lmforge.compress (quantize, prune, factorize, report, sweep)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

compress_app = typer.Typer(
    help="Make a model smaller and faster, with a quality report beside the original.", no_args_is_help=True
)

_REPORT_HELP = "Also measure the original and the result now and write report.md/.json/.png into this folder."


def _report_options(text_data: str, task_data: str, limit: int, runs: int, decode_tokens: int) -> dict[str, Any]:
    return {
        "text_data": text_data,
        "task_data": task_data,
        "limit": limit,
        "runs": runs,
        "decode_tokens": decode_tokens,
    }


def _finish(
    result: Any, model: Path, out: Path, method: str, report_dir: Path | None, options: dict[str, Any], as_json: bool
) -> None:
    """Print what was written and, with --report, measure both models and print the table."""
    payload: dict[str, Any] = {"result": result.to_dict()}
    if report_dir is not None:
        from lmforge.compress import compare, write_quality_report

        report = compare(model, [(str(out), method)], **options)
        paths = write_quality_report(report, report_dir)
        payload["report"] = report.to_dict()
        payload["report_files"] = {key: str(path) for key, path in paths.items()}
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    details = {k: v for k, v in payload["result"].items() if k not in ("notes", "ranks")}
    console.print(f"[green]wrote[/] {escape(str(out))}: " + escape(", ".join(f"{k}={v}" for k, v in details.items())))
    for note in payload["result"].get("notes", []):
        console.print(f"[yellow]note:[/] {escape(note)}")
    if report_dir is not None:
        from lmforge.compress.report import render_markdown

        console.print(escape(render_markdown(report)))
        console.print(f"report: {escape(str(paths['markdown']))}, {escape(str(paths['plot']))}")


def _measure_options() -> dict[str, Any]:
    return {
        "text_data": typer.Option(
            "builtin:corpus", "--text-data", help="Held-out text: perplexity, or an encoder's sentences to embed."
        ),
        "task_data": typer.Option("builtin:arith-sft", "--task-data", help="Chat problems for exact match."),
        "limit": typer.Option(50, "--limit", help="Examples of each (an encoder's sentences) for the report."),
        "runs": typer.Option(3, "--runs", help="Decode (encoder: encode) speed runs (median reported; at least 3)."),
        "decode_tokens": typer.Option(32, "--decode-tokens", help="New tokens per decode-speed run."),
    }


_M = _measure_options()


@compress_app.command("quantize")
def quantize_command(
    model: Path = typer.Argument(..., help="HF model folder or training run."),
    out: Path = typer.Argument(..., help="Output: a .gguf file (gguf-*) or a folder (bnb-*, torchao-*, gptq)."),
    method: str = typer.Option(
        ...,
        "--method",
        help="gguf-f16 | gguf-q8_0 | gguf-q4_0 | gguf-q4_k_m | gguf-q5_k_m | gguf-q6_k | bnb-int8 | bnb-nf4 | "
        "torchao-int8 | torchao-int4 | gptq",
    ),
    calibration: str = typer.Option("builtin:corpus", "--calibration", help="gptq: data to calibrate on."),
    samples: int = typer.Option(32, "--samples", help="gptq: calibration examples."),
    report: Path = typer.Option(None, "--report", help=_REPORT_HELP),
    text_data: str = _M["text_data"],
    task_data: str = _M["task_data"],
    limit: int = _M["limit"],
    runs: int = _M["runs"],
    decode_tokens: int = _M["decode_tokens"],
    as_json: bool = typer.Option(False, "--json", help="Print the result (and report) as JSON."),
) -> None:
    """Quantize a model for its runtime (llama.cpp for GGUF, transformers for bitsandbytes, torchao and GPTQ; an
    encoder such as MiniLM: bitsandbytes only); read back to verify."""
    from lmforge.compress import quantize

    result = quantize(model, out, method=method, progress=not as_json, calibration=calibration, samples=samples)
    _finish(
        result, model, out, method, report, _report_options(text_data, task_data, limit, runs, decode_tokens), as_json
    )


@compress_app.command("prune")
def prune_command(
    model: Path = typer.Argument(..., help="HF model folder or training run."),
    out: Path = typer.Argument(..., help="Output model folder."),
    sparsity: float = typer.Option(
        0.5, "--sparsity", help="Share of weights (or MLP channels, or attention heads) to remove."
    ),
    method: str = typer.Option("wanda", "--method", help="magnitude | wanda (weight × input-activation norm)."),
    pattern: str = typer.Option("unstructured", "--pattern", help="unstructured | 2:4"),
    structure: str = typer.Option(
        "none",
        "--structure",
        help="none | mlp | heads (remove whole MLP channels or attention heads: smaller, faster).",
    ),
    calibration: str = typer.Option("builtin:corpus", "--calibration", help="Data for Wanda's activation norms."),
    samples: int = typer.Option(32, "--samples", help="Calibration examples."),
    report: Path = typer.Option(None, "--report", help=_REPORT_HELP),
    text_data: str = _M["text_data"],
    task_data: str = _M["task_data"],
    limit: int = _M["limit"],
    runs: int = _M["runs"],
    decode_tokens: int = _M["decode_tokens"],
    as_json: bool = typer.Option(False, "--json", help="Print the result (and report) as JSON."),
) -> None:
    """Prune a causal LM or an encoder by magnitude or Wanda (unstructured, 2:4, whole MLP channels, or whole
    attention heads of a decoder)."""
    from lmforge.compress import prune

    result = prune(
        model,
        out,
        sparsity=sparsity,
        method=method,
        pattern=pattern,
        structure=structure,
        calibration=calibration,
        samples=samples,
    )
    label = f"prune-{method}-{structure if structure != 'none' else pattern}-{sparsity}"
    _finish(
        result, model, out, label, report, _report_options(text_data, task_data, limit, runs, decode_tokens), as_json
    )


@compress_app.command("factorize")
def factorize_command(
    model: Path = typer.Argument(..., help="HF model folder or training run."),
    out: Path = typer.Argument(..., help="Output model folder."),
    energy: float = typer.Option(None, "--energy", help="Share of Σσ² each layer keeps (rank chosen per layer)."),
    rank: int = typer.Option(None, "--rank", help="One rank for every chosen layer."),
    report: Path = typer.Option(None, "--report", help=_REPORT_HELP),
    text_data: str = _M["text_data"],
    task_data: str = _M["task_data"],
    limit: int = _M["limit"],
    runs: int = _M["runs"],
    decode_tokens: int = _M["decode_tokens"],
    as_json: bool = typer.Option(False, "--json", help="Print the result (and report) as JSON."),
) -> None:
    """Replace the linear layers of the decoder (or encoder) blocks by truncated-SVD pairs where that makes them
    smaller."""
    from lmforge.compress import factorize

    result = factorize(model, out, energy=energy, rank=rank)
    label = f"svd-energy-{energy}" if energy is not None else f"svd-rank-{rank}"
    _finish(
        result, model, out, label, report, _report_options(text_data, task_data, limit, runs, decode_tokens), as_json
    )


@compress_app.command("distill")
def distill_command(
    config: Path = typer.Argument(..., help="A train config with stage: distill (see examples/distill.yaml)."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config value: key=value (repeatable)."),
    report: Path = typer.Option(None, "--report", help="Report folder (default RUN/compress-report)."),
    text_data: str = _M["text_data"],
    task_data: str = _M["task_data"],
    limit: int = _M["limit"],
    runs: int = _M["runs"],
    decode_tokens: int = _M["decode_tokens"],
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Distil a teacher into a student (the train stage distill), then report teacher beside student."""
    from lmforge.compress import distill
    from lmforge.compress.report import render_markdown

    _, result = distill(
        config,
        overrides=overrides or [],
        report_dir=report,
        progress=not as_json,
        report_options=_report_options(text_data, task_data, limit, runs, decode_tokens),
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    typer.echo(render_markdown(result))


@compress_app.command("report")
def report_command(
    original: Path = typer.Argument(..., help="The original model (folder, run, or .gguf)."),
    compressed: list[Path] = typer.Argument(..., help="Compressed models (or a distilled student) to set beside it."),
    out: Path = typer.Option(..., "--out", help="Folder for report.md, report.json, report.png."),
    text_data: str = _M["text_data"],
    task_data: str = _M["task_data"],
    limit: int = _M["limit"],
    runs: int = _M["runs"],
    decode_tokens: int = _M["decode_tokens"],
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Measure ORIGINAL and every COMPRESSED model in one run (e.g. a distillation's teacher and student)."""
    from lmforge.compress import compare, write_quality_report
    from lmforge.compress.report import render_markdown

    result = compare(
        original,
        [(str(path), path.name) for path in compressed],
        **_report_options(text_data, task_data, limit, runs, decode_tokens),
    )
    paths = write_quality_report(result, out)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    typer.echo(render_markdown(result))
    typer.echo(f"report: {paths['markdown']}, {paths['plot']}")


@compress_app.command("sweep")
def sweep_command(
    model: Path = typer.Argument(..., help="HF model folder or training run."),
    out: Path = typer.Argument(..., help="Folder for every compressed model and the report."),
    kind: str = typer.Option(..., "--kind", help="quantize | prune | factorize"),
    values: str = typer.Option(..., "--values", help="Comma-separated: methods, sparsities or energies."),
    method: str = typer.Option(None, "--method", help="prune: magnitude | wanda."),
    pattern: str = typer.Option(None, "--pattern", help="prune: unstructured | 2:4."),
    structure: str = typer.Option(None, "--structure", help="prune: none | mlp | heads."),
    text_data: str = _M["text_data"],
    task_data: str = _M["task_data"],
    limit: int = _M["limit"],
    runs: int = _M["runs"],
    decode_tokens: int = _M["decode_tokens"],
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run one method at several settings and draw the size/quality curve in one report."""
    from lmforge.compress import sweep
    from lmforge.compress.report import render_markdown

    options = {
        key: value
        for key, value in {"method": method, "pattern": pattern, "structure": structure}.items()
        if value is not None
    }
    result = sweep(
        model,
        out,
        kind=kind,
        values=[v.strip() for v in values.split(",") if v.strip()],
        options=options,
        report_options=_report_options(text_data, task_data, limit, runs, decode_tokens),
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    typer.echo(render_markdown(result))


def register(app: typer.Typer) -> None:
    """Adds `lmforge compress ...` to the lmforge app."""
    app.add_typer(compress_app, name="compress")
