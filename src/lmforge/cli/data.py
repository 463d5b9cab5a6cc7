"""`lmforge data check|stats|split|preview|convert`: thin wrappers over lmforge.data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from lmforge.data.load import LoadResult

data_app = typer.Typer(
    name="data",
    help="Check, describe, split, preview and convert training data (every kind, every source).",
    no_args_is_help=True,
)

DataArg = Annotated[str, typer.Argument(help="A file, folder, glob, save_to_disk folder, builtin:NAME or hub name.")]
KindOpt = Annotated[
    str | None,
    typer.Option(
        help="Force the kind: text, alpaca, sharegpt, messages, preference, unpaired_preference, classification."
    ),
]
ColumnsOpt = Annotated[str | None, typer.Option(help="Map your columns: instruction=question,output=answer.")]
LabelsOpt = Annotated[str | None, typer.Option(help="Classification label set, in id order: negative,positive.")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Which split of a DatasetDict or hub dataset to read.")]
OnErrorOpt = Annotated[str, typer.Option("--on-error", help="fail: stop and list problems; skip: drop bad records.")]
RejectsOpt = Annotated[Path | None, typer.Option(help="Where skipped records go (default: beside the output).")]
DedupOpt = Annotated[bool, typer.Option("--dedup", help="Remove exact and near-exact duplicates.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TokenizerOpt = Annotated[Path | None, typer.Option(help="A local model or tokenizer folder.")]
MaxLenOpt = Annotated[int | None, typer.Option("--max-len", help="Training sequence length in tokens.")]
TemplateOpt = Annotated[
    str | None, typer.Option(help="Chat template: the tokenizer's own, chatml, llama-3, qwen, alpaca.")
]


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _load(
    data: str, kind: str | None, columns: str | None, labels: str | None, split: str | None,
    on_error: str, rejects: Path | None, dedup: bool, beside: Path | None = None, show_progress: bool = True,
) -> LoadResult:  # fmt: skip
    from lmforge.data.load import default_rejects_path, load_data
    from lmforge.data.validate import on_error_policy

    if on_error == "skip" and rejects is None:
        rejects = default_rejects_path(data, beside)
    return load_data(
        data,
        kind=kind,
        columns=columns,
        on_error=on_error_policy(on_error),
        rejects_path=rejects,  # load_data writes it only when skipping
        labels=[name.strip() for name in labels.split(",")] if labels else None,
        split=split,
        dedup=dedup,
        progress=show_progress and sys.stderr.isatty(),
    )


def _load_summary(result: LoadResult) -> dict[str, Any]:
    return {
        "kind": result.kind.value,
        "format": result.format,
        "sources": result.sources,
        "label_names": result.label_names,
        "report": result.report.to_dict(),
    }


def _print_load(result: LoadResult) -> None:
    from lmforge.data.validate import problem_summary

    console = _console()
    report = result.report
    shown = ", ".join(result.sources[:3]) + (f" and {len(result.sources) - 3} more" if len(result.sources) > 3 else "")
    console.print(f"[bold]{shown}[/]: {result.format} → [bold]{result.kind.value}[/]")
    console.print(problem_summary(report))
    for problem in report.problems:
        console.print(f"  [yellow]{problem}[/]")
    if report.duplicates_removed:
        console.print(f"removed {report.duplicates_removed} duplicates")
    if result.label_names:
        console.print(f"labels: {', '.join(result.label_names)}")


@data_app.command()
def check(
    data: DataArg, kind: KindOpt = None, columns: ColumnsOpt = None, labels: LabelsOpt = None, split: SplitOpt = None,
    tokenizer: TokenizerOpt = None, max_len: MaxLenOpt = None, template: TemplateOpt = None,
    on_error: OnErrorOpt = "fail", rejects: RejectsOpt = None, dedup: DedupOpt = False, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Validate every record (file:line per problem); count duplicates and, with --tokenizer --max-len, truncation."""
    from lmforge.data.stats import compute_stats, load_tokenizer

    result = _load(data, kind, columns, labels, split, on_error, rejects, dedup, show_progress=not as_json)
    loaded = load_tokenizer(tokenizer) if tokenizer is not None else None
    figures = compute_stats(result.dataset, result.kind, tokenizer=loaded, max_len=max_len, template=template)
    duplicates = figures.duplicates
    if as_json:
        over = figures.tokens.over_max_len if figures.tokens and max_len is not None else None
        typer.echo(json.dumps(_load_summary(result) | {"duplicates": duplicates.to_dict(), "over_max_len": over}))
        return
    _print_load(result)
    console = _console()
    console.print(f"duplicates: {duplicates.exact_duplicates} exact, {duplicates.near_duplicates} near-exact"
                  + ("" if dedup else " (--dedup removes them)"))  # fmt: skip
    if figures.tokens and max_len is not None:
        console.print(f"over --max-len {max_len}: {figures.tokens.over_max_len} records would be truncated")


@data_app.command()
def stats(
    data: DataArg, kind: KindOpt = None, columns: ColumnsOpt = None, labels: LabelsOpt = None, split: SplitOpt = None,
    tokenizer: TokenizerOpt = None, max_len: MaxLenOpt = None, template: TemplateOpt = None,
    histogram: Annotated[Path | None, typer.Option(help="Write a token-length histogram PNG here.")] = None,
    on_error: OnErrorOpt = "fail", rejects: RejectsOpt = None, dedup: DedupOpt = False, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Sizes, labels, duplicates and (with --tokenizer) token-length percentiles and truncation."""
    from lmforge.data.stats import compute_stats, load_tokenizer

    result = _load(data, kind, columns, labels, split, on_error, rejects, dedup, show_progress=not as_json)
    loaded = load_tokenizer(tokenizer) if tokenizer is not None else None
    figures = compute_stats(
        result.dataset, result.kind, tokenizer=loaded, max_len=max_len, template=template,
        label_names=result.label_names, histogram_path=histogram,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(_load_summary(result) | {"stats": figures.to_dict()}))
        return
    _print_load(result)
    _print_stats(figures)


def _print_stats(figures: Any) -> None:
    from rich.table import Table

    table = Table("", "mean", "p50", "p90", "p99", "max", "total", title=f"{figures.records} records")
    rows = [("characters", figures.chars)] + ([("tokens", figures.tokens.tokens)] if figures.tokens else [])
    for name, lengths in rows:
        table.add_row(
            name,
            f"{lengths.mean:.1f}",
            *(str(v) for v in (lengths.p50, lengths.p90, lengths.p99, lengths.max, lengths.total)),
        )
    console = _console()
    console.print(table)
    if figures.turns_mean is not None:
        console.print(f"messages per conversation: {figures.turns_mean}")
    if figures.label_counts:
        console.print("labels: " + ", ".join(f"{name} {count}" for name, count in figures.label_counts.items()))
    duplicates = figures.duplicates
    console.print(f"duplicates: {duplicates.exact_duplicates} exact, {duplicates.near_duplicates} near-exact")
    if figures.tokens:
        tokens = figures.tokens
        if tokens.template:
            console.print(f"chat template: {tokens.template}")
        if tokens.max_len is not None:
            share = tokens.over_max_len / figures.records if figures.records else 0.0
            console.print(
                f"over --max-len {tokens.max_len}: {tokens.over_max_len} records ({share:.1%}) would be truncated"
            )
        if tokens.histogram_path:
            console.print(f"histogram: {tokens.histogram_path}")


@data_app.command("split")
def split_command(
    data: DataArg,
    out: Annotated[Path, typer.Option(help="Folder for train/validation/test .jsonl and split.json.")],
    ratios: Annotated[str, typer.Option(help="train,validation,test shares (two numbers: train,test).")] = "8,1,1",
    seed: Annotated[int, typer.Option(help="Same seed, same split, on any machine.")] = 0,
    to: Annotated[str | None, typer.Option(help="Write records in this layout (default canonical).")] = None,
    save_to_disk: Annotated[bool, typer.Option("--save-to-disk", help="Write a datasets folder instead of JSONL.")] = False,
    kind: KindOpt = None, columns: ColumnsOpt = None, labels: LabelsOpt = None, split: SplitOpt = None,
    on_error: OnErrorOpt = "fail", rejects: RejectsOpt = None, dedup: DedupOpt = False, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Seeded, leak-free train/validation/test split (stratified for classification)."""
    from lmforge.data.split import split_dataset, write_splits

    result = _load(data, kind, columns, labels, split, on_error, rejects, dedup, beside=out, show_progress=not as_json)
    parts = split_dataset(result.dataset, result.kind, ratios=ratios, seed=seed, label_names=result.label_names)
    written = write_splits(parts, out, result.kind, fmt=to, save_to_disk=save_to_disk)
    if as_json:
        typer.echo(
            json.dumps(_load_summary(result) | {"split": parts.report.to_dict(), "written": [str(p) for p in written]})
        )
        return
    _print_load(result)
    console = _console()
    counts = ", ".join(f"{name} {count}" for name, count in parts.report.counts.items())
    console.print(f"split (seed {seed}): {counts}; {parts.report.groups} distinct prompts, none shared across splits")
    if parts.report.label_counts:
        for name, by_label in parts.report.label_counts.items():
            console.print(f"  {name}: " + ", ".join(f"{label} {count}" for label, count in by_label.items()))
    console.print(f"wrote {out}")


@data_app.command()
def convert(
    data: DataArg,
    out: Annotated[Path, typer.Option(help="Output .jsonl file.")],
    to: Annotated[str | None, typer.Option(help="Layout to write: canonical (default), messages, sharegpt, alpaca.")] = None,
    kind: KindOpt = None, columns: ColumnsOpt = None, labels: LabelsOpt = None, split: SplitOpt = None,
    on_error: OnErrorOpt = "fail", rejects: RejectsOpt = None, dedup: DedupOpt = False, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Write the data in its canonical form (or another layout of the same kind) as JSONL."""
    from lmforge.data.load import save_jsonl

    result = _load(data, kind, columns, labels, split, on_error, rejects, dedup, beside=out, show_progress=not as_json)
    layout = None if to in (None, "canonical") else to
    written = save_jsonl(result.dataset, out, result.kind, fmt=layout, label_names=result.label_names)
    if as_json:
        typer.echo(json.dumps(_load_summary(result) | {"written": written, "out": str(out)}))
        return
    _print_load(result)
    _console().print(f"wrote {written} records to {out}")


@data_app.command()
def preview(
    data: DataArg,
    tokenizer: Annotated[Path, typer.Option(help="A local model or tokenizer folder.")],
    n: Annotated[int, typer.Option("-n", "--n", help="How many records to show.")] = 3,
    max_len: MaxLenOpt = None, template: TemplateOpt = None,
    train_on_prompt: Annotated[bool, typer.Option("--train-on-prompt", help="Train on every token.")] = False,
    kind: KindOpt = None, columns: ColumnsOpt = None, labels: LabelsOpt = None, split: SplitOpt = None,
    on_error: OnErrorOpt = "fail", rejects: RejectsOpt = None, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Show records exactly as the model sees them after templating: masked (untrained) text dimmed."""
    from lmforge.data.stats import load_tokenizer, preview_records

    result = _load(data, kind, columns, labels, split, on_error, rejects, False, show_progress=False)
    shown = preview_records(
        result, load_tokenizer(tokenizer), n=n, max_len=max_len, template=template, train_on_prompt=train_on_prompt
    )
    if as_json:
        typer.echo(json.dumps({"kind": result.kind.value, "records": [record.to_dict() for record in shown]}))
        return
    from rich.rule import Rule
    from rich.text import Text

    console = _console()
    console.print("[dim]dim = masked (label -100)[/], normal = trained on")
    for record in shown:
        console.print(
            Rule(f"{record.location} · {record.tokens} tokens" + (" · truncated" if record.truncated else ""))
        )
        for title, segments in record.parts:
            if title:
                console.print(f"[bold]{title}[/]")
            text = Text()
            for segment, trained in segments:
                text.append(segment, style=None if trained else "dim")
            console.print(text)
        if record.note:
            console.print(f"[bold]{record.note}[/]")


def register(app: typer.Typer) -> None:
    """Adds `lmforge data ...` to the lmforge app."""
    app.add_typer(data_app, name="data")
