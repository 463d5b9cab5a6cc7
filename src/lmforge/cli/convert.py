"""CLI commands: convert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from lmforge.files.convert.common import ConvertReport


def convert(
    src: Path = typer.Argument(..., help="Checkpoint file, HF model folder, run, LoRA adapter folder, or hub id."),
    dst: Path = typer.Argument(..., help="Output: .safetensors / .gguf / .onnx file, or a folder."),
    to: str = typer.Option(None, "--to", help="safetensors | gguf | onnx | merged (default: from DST's suffix)."),
    quant: str = typer.Option(
        None, "--quant", help="GGUF type: f32 | f16 | bf16 | q8_0 | q4_0 | q4_k_m | q5_k_m | q6_k (default f16)."
    ),
    pre_tokenizer: str = typer.Option(
        None,
        "--pre-tokenizer",
        help="GGUF: force llama.cpp's pre-tokenizer name (default: the one whose "
        "split matches the tokenizer's; refused if none does).",
    ),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help="Largest safetensors shard (5GB, 500MiB)."),
    adapter: Path = typer.Option(
        None, "--adapter", help="LoRA adapter folder to merge into SRC (implies --to merged)."
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Load pickles without the safety scan (runs code!)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Convert a model between formats; the output is written atomically and read back to verify it.

    pickle (.bin/.pt/.pth or an HF folder) → safetensors; HF Llama/Mistral/Qwen2/Qwen3 → GGUF;
    HF model → ONNX; LoRA adapter + base → merged safetensors model.
    """
    from lmforge.files.convert import convert_model
    from lmforge.hub.reference import locate_model

    # A hub id or a run folder (its final/) becomes its local folder.
    report = convert_model(
        locate_model(str(src), need="any").path,
        dst,
        to=to,
        quant=quant,
        shard_size=max_shard_size,
        adapter=locate_model(str(adapter), need="any").path if adapter is not None else None,
        trust_pickle=trust_pickle,
        progress=not as_json,
        pre_tokenizer=pre_tokenizer,
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    _render(report)


def _render(report: ConvertReport) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    quant = f" ({report.quant})" if report.quant else ""
    console.print(
        f"[green]wrote[/] {escape(report.destination)} as {report.to}{quant}: "
        f"{report.tensor_count} tensors, {report.params:,} parameters, "
        f"{report.size_bytes / 1e6:,.1f} MB in {report.seconds:.1f} s"
    )
    for path in report.files:
        console.print(f"  {escape(path)}")
    checks = ", ".join(f"{key}={value}" for key, value in report.checks.items())
    console.print(f"[green]verified[/] by reading it back: {escape(checks)}")
    if report.aliases:
        console.print(
            f"shared tensors written once: {escape(', '.join(f'{a} → {k}' for a, k in report.aliases.items()))}"
        )
    if report.skipped:
        console.print(f"[yellow]not tensors, left out:[/] {escape(', '.join(report.skipped))}")
    if report.copied:
        console.print(f"copied: {escape(', '.join(report.copied))}")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")


def register(app: typer.Typer) -> None:
    """Adds this capability's commands to the lmforge app."""
    app.command("convert")(convert)
