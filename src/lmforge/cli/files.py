"""`lmforge inspect`: parse, call lmforge.files.inspect, render with rich (or print one JSON object)."""

from __future__ import annotations

import json
from typing import Any

import typer

_GIB = 1024**3


def _bytes(value: int) -> str:
    if value >= 10**9:
        return f"{value / 1e9:,.2f} GB ({value / _GIB:,.2f} GiB)"
    if value >= 10**6:
        return f"{value / 1e6:,.1f} MB"
    return f"{value:,} B"


def _params(value: int | None) -> str:
    if value is None:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:,.2f}{unit} ({value:,})"
    return f"{value:,}"


def _value(value: Any, limit: int = 80) -> str:
    """Metadata for humans: long arrays (tokenizer vocabularies) and long strings summarised, markup escaped."""
    from rich.markup import escape

    from lmforge.files.gguf_reader import ArraySummary

    if isinstance(value, ArraySummary):
        shown = ", ".join(repr(v) for v in value.preview[:4])
        return escape(f"[{value.item_type} × {value.length:,}: {shown}, …]")
    text = ", ".join(map(str, value)) if isinstance(value, list) and len(value) <= 16 else str(value)
    return escape(text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} chars)")


def _table(title: str, columns: list[str], rows: list[list[str]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if index and column in {"params", "bytes", "share"} else "left")
    for row in rows:
        table.add_row(*row)
    return table


def _render(report: Any, show_tensors: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    total = report.total_params or 1
    summary = [
        ["path", escape(report.path)],
        ["format", report.format],
        ["files", f"{len(report.files)} file(s), {_bytes(report.total_size_bytes)}"],
        ["tensors", f"{report.tensor_count:,}"],
        ["parameters", _params(report.total_params)],
    ]
    if report.buffers:
        elements = sum(report.buffers.values())
        summary.append(["buffers", f"{len(report.buffers)} ({elements:,} elements, not parameters)"])
    if report.shared:
        summary.append(["shared copies", f"{len(report.shared)} (counted once)"])
    if report.num_experts:
        summary.append(["experts", f"{report.experts_per_token} of {report.num_experts} per token"])
        summary.append(["active parameters", _params(report.active_params)])
    if report.architecture:
        summary.append(["architecture", f"{report.architecture} ({report.model_type})"])
    summary.append(["quantization", report.quantization or "none"])
    if report.bits_per_weight is not None:
        summary.append(["bits per weight", f"{report.bits_per_weight:g}"])
    if report.name is not None:
        name = report.name
        said = [f"family {name.family}"]
        said += [f"{_params(name.total_params).split(' ')[0]} total"] if name.total_params else []
        said += [f"{_params(name.active_params).split(' ')[0]} active"] if name.active_params else []
        said += [f"{name.num_experts} experts"] if name.num_experts else []
        said += [
            x for x in (name.variant, name.version, name.release and f"release {name.release}", name.quantization) if x
        ]
        summary.append(["name says", ", ".join(said)])
    if report.scan is not None:
        colour = {"safe": "green", "not-needed": "green", "unsafe": "red", "unproven": "red", "error": "red"}.get(
            report.scan.verdict, "yellow"
        )
        summary.append(["safety scan", f"[{colour}]{report.scan.verdict}[/]: {report.scan.detail}"])
    console.print(_table("Model file", ["", ""], summary))
    if report.params_by_dtype:
        rows = [[k, _params(v), f"{v / total:.1%}"] for k, v in report.params_by_dtype.items()]
        console.print(_table("Parameters by dtype", ["dtype", "params", "share"], rows))
    if report.params_by_component:
        rows = [[k, _params(v), f"{v / total:.1%}"] for k, v in report.params_by_component.items()]
        console.print(_table("Parameters by component", ["component", "params", "share"], rows))
    if report.config:
        console.print(_table("Architecture", ["setting", "value"], [[k, _value(v)] for k, v in report.config.items()]))
    if report.tokenizer:
        console.print(_table("Tokenizer", ["", ""], [[k, _value(v)] for k, v in report.tokenizer.items()]))
    if report.generation:
        rows = [[k, _value(v)] for k, v in report.generation.items()]
        console.print(_table("Generation defaults", ["setting", "value"], rows))
    if report.onnx:
        rows = [[k, _value(v)] for k, v in report.onnx.items() if k not in ("inputs", "outputs")]
        for kind in ("inputs", "outputs"):
            rows += [
                [kind[:-1], escape(f"{io['name']}: {io['dtype']} {io['shape']}")] for io in report.onnx.get(kind, [])
            ]
        console.print(_table("ONNX", ["", ""], rows))
    if report.metadata:
        rows = [[escape(str(k)), _value(v)] for k, v in report.metadata.items()]
        console.print(_table("Metadata", ["key", "value"], rows))
    rows = [[r.runtime, "[green]yes[/]" if r.can_load else "[red]no[/]", r.reason] for r in report.runtimes]
    console.print(_table("Runtimes", ["runtime", "loads", "why"], rows))
    if show_tensors:
        columns = ["name", "dtype", "shape", "params", "bytes", "component"] + (
            ["file"] if len(report.files) > 1 else []
        )
        rows = [
            [escape(t.name), t.dtype, str(t.shape), f"{t.params:,}", f"{t.size_bytes:,}", t.component, escape(t.file)][
                : len(columns)
            ]
            for t in report.tensors
        ]
        console.print(_table(f"Tensors ({len(rows):,})", columns, rows))
    for note in report.notes:
        console.print(f"note: {note}")


def inspect_command(
    path: str = typer.Argument(
        ...,
        help="A model file, model, run or adapter folder, shard index, or hub id "
        "org/name[@revision] (downloaded into the HF cache).",
    ),
    tensors: bool = typer.Option(False, "--tensors", help="List every tensor: name, dtype, shape, params, bytes."),
    pattern: str | None = typer.Option(
        None, "--filter", help="Only tensors whose name matches this glob ('*.q_proj.*') or regex ('layers\\.0\\.')."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """What is in a model file, read from headers only: format, params, dtypes, quantization, safety, runtimes."""
    from lmforge.files.inspect import filter_tensors, inspect_path
    from lmforge.hub.reference import locate_model

    report = inspect_path(locate_model(path, need="any").path)
    show_tensors = tensors or pattern is not None
    if pattern is not None:
        report.tensors = filter_tensors(report.tensors, pattern)
    if as_json:
        data = report.to_dict()
        if not show_tensors:
            data.pop("tensors")
        typer.echo(json.dumps(data, indent=2))
        return
    _render(report, show_tensors)


def register(app: typer.Typer) -> None:
    """Adds this capability's commands to the lmforge app."""
    app.command("inspect")(inspect_command)
