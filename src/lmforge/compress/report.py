"""The one quality report every compression method gets: what it saved, what it cost, beside the original.

For each model (the original first, measured in the same run):
- size on disk: the weight files (a folder's safetensors, or the .gguf file);
- parameters: as the model holds them (a pruned-to-zero weight still counts; a removed channel does not);
- load memory: bytes of parameters and buffers once loaded (transformers' get_memory_footprint), or for
  a GGUF in llama.cpp the file itself (llama.cpp maps it);
- held-out perplexity on text (default builtin:corpus, test split) and greedy exact match on chat
  problems (default builtin:arith-sft, test split), through lmforge.evaluate (a GGUF is read by
  transformers' GGUF loader, which dequantizes it: quality of the quantized weights);
- CPU decode tokens/s: median (and range) of >= 3 greedy runs of a fixed number of new tokens, in the
  runtime the format is for (llama.cpp for GGUF, transformers otherwise), one thread each.
report.md, report.json and report.png (quality against size) are written atomically.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import UserInputError
from lmforge.fileio import atomic_save_figure, atomic_write_json, atomic_write_text

DEFAULT_TEXT_DATA = "builtin:corpus"
DEFAULT_TASK_DATA = "builtin:arith-sft"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_DECODE_PROMPT = "Sort the numbers 3 1 2."


@dataclass
class ModelQuality:
    """One model's figures; None where a figure could not be measured (reason in `notes`)."""

    name: str
    path: str
    method: str  # "original", "gguf-q4_k_m", "prune-wanda-2:4-0.5", ...
    runtime: str  # where speed and load memory were measured: "transformers" or "llama.cpp"
    size_bytes: int
    params: int | None
    load_bytes: int | None
    perplexity: float | None
    exact_match: float | None
    decode_tokens_per_second: float | None  # median over the runs
    decode_runs: list[float] = field(default_factory=list)  # tokens/s of every run
    notes: list[str] = field(default_factory=list)


@dataclass
class QualityReport:
    original: ModelQuality
    compressed: list[ModelQuality]
    # The original as an f32 GGUF in llama.cpp, when GGUF results are compared: their speed and memory
    # are set beside it (same runtime), their quality beside `original`.
    original_llama_cpp: ModelQuality | None
    text_data: str
    task_data: str
    limit: int
    decode_tokens: int
    seconds: float
    machine: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def size_on_disk(path: Path) -> int:
    """Bytes of the weight files: the file itself, or a folder's weights (config and tokenizer excluded)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)


def _model_format(path: Path) -> str:
    return "gguf" if path.suffix == ".gguf" else "hf"


def _decode_speed_transformers(path: str, decode_tokens: int, runs: int) -> tuple[list[float], int, int]:
    """Tokens/s of `runs` greedy decodes of exactly `decode_tokens` new tokens (eos ignored), one thread;
    also the parameter count and load memory of the loaded model."""
    import torch

    from lmforge.generate.load import load_model

    loaded = load_model(path, device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt = loaded.render_chat([{"role": "user", "content": _DECODE_PROMPT}])
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    speeds = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # comparable across formats, and two threads on a shared 2-core box thrash
    try:
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)  # warm-up
            for _ in range(runs):
                started = time.perf_counter()
                model.generate(ids, max_new_tokens=decode_tokens, min_new_tokens=decode_tokens, do_sample=False,
                               pad_token_id=tokenizer.pad_token_id)
                speeds.append(decode_tokens / (time.perf_counter() - started))
    finally:
        torch.set_num_threads(threads)
    return speeds, int(model.num_parameters()), int(model.get_memory_footprint())


def _decode_speed_llama_cpp(path: Path, decode_tokens: int, runs: int) -> list[float]:
    """Tokens/s of `runs` greedy llama.cpp decodes (first to last generated token), one thread."""
    from lmforge.files.llama_cpp import run_llama_cpp
    from lmforge.generate.load import load_model

    loaded = load_model(str(path), device="cpu")
    prompt = loaded.render_chat([{"role": "user", "content": _DECODE_PROMPT}])
    results, _ = run_llama_cpp(path, prompts=[prompt] * (runs + 1), max_tokens=decode_tokens, threads=1)
    return [r.decode_tokens / r.decode_seconds for r in results[1:] if r.decode_seconds > 0]  # first: warm-up


def _gguf_params(path: Path) -> int:
    import gguf

    return int(sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors))


def measure(path: str | os.PathLike[str], *, method: str = "original", text_data: str = DEFAULT_TEXT_DATA,
            task_data: str = DEFAULT_TASK_DATA, limit: int = 50, decode_tokens: int = 32,
            runs: int = 3) -> ModelQuality:
    """Every figure of the report for one model (a model folder, run folder or .gguf file)."""
    from lmforge.evaluate.run import evaluate_model
    from lmforge.files.llama_cpp import llama_cpp_available
    from lmforge.generate.sampling import SamplingParams

    if runs < 3:
        raise UserInputError(f"--runs must be at least 3 (a median needs them), got {runs}")
    target = Path(path)
    if not target.exists():
        raise UserInputError(f"{target} does not exist")
    notes: list[str] = []
    perplexity = evaluate_model(str(target), text_data, task="perplexity", limit=limit).summary["perplexity"]
    exact = evaluate_model(str(target), task_data, task="generation", limit=limit,
                           params=SamplingParams(temperature=0, max_new_tokens=24)).summary["exact_match"]
    runtime = "transformers"
    if _model_format(target) == "gguf":
        params, load_bytes = _gguf_params(target), target.stat().st_size
        if llama_cpp_available():
            runtime, speeds = "llama.cpp", _decode_speed_llama_cpp(target, decode_tokens, runs)
        else:
            speeds, _, _ = _decode_speed_transformers(str(target), decode_tokens, runs)
            notes.append("llama.cpp is not installed: speed measured in transformers on dequantized weights")
    else:
        speeds, params, load_bytes = _decode_speed_transformers(str(target), decode_tokens, runs)
    return ModelQuality(
        name=target.name, path=str(target), method=method, runtime=runtime, size_bytes=size_on_disk(target),
        params=params, load_bytes=load_bytes, perplexity=float(perplexity), exact_match=float(exact),
        decode_tokens_per_second=statistics.median(speeds) if speeds else None, decode_runs=speeds, notes=notes)


def compare(original: str | os.PathLike[str], compressed: list[tuple[str, str]], *,
            text_data: str = DEFAULT_TEXT_DATA, task_data: str = DEFAULT_TASK_DATA, limit: int = 50,
            decode_tokens: int = 32, runs: int = 3) -> QualityReport:
    """The original and every (path, method) in `compressed`, measured now, one after the other. When a
    result is a GGUF and llama.cpp is installed, the original is also converted to an f32 GGUF and
    measured in llama.cpp, so GGUF speeds are compared within one runtime."""
    import platform
    import tempfile

    from lmforge.files.llama_cpp import llama_cpp_available

    started = time.perf_counter()
    options = {"text_data": text_data, "task_data": task_data, "limit": limit, "decode_tokens": decode_tokens,
               "runs": runs}
    base = measure(original, **options)
    others = [measure(path, method=method, **options) for path, method in compressed]
    base_gguf = None
    if any(Path(path).suffix == ".gguf" for path, _ in compressed) and llama_cpp_available() \
            and Path(original).suffix != ".gguf":
        from lmforge.files.convert import convert
        from lmforge.generate.load import resolve_model_path

        with tempfile.TemporaryDirectory() as scratch:
            f32 = Path(scratch) / f"{Path(original).name}-f32.gguf"
            convert(resolve_model_path(original), f32, to="gguf", quant="f32", progress=False)
            base_gguf = measure(f32, method="original (gguf-f32)", **options)
    return QualityReport(original=base, compressed=others, original_llama_cpp=base_gguf, text_data=text_data,
                         task_data=task_data, limit=limit,
                         decode_tokens=decode_tokens, seconds=time.perf_counter() - started,
                         machine=f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
                                 f"{os.getloadavg()[0]:.1f}")


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}×"


def render_markdown(report: QualityReport) -> str:
    """The side-by-side table: every figure beside the original's, with the ratio to it."""
    base = report.original
    same_runtime = {"llama.cpp": report.original_llama_cpp or base, "transformers": base}
    rows = [base, *([report.original_llama_cpp] if report.original_llama_cpp else []), *report.compressed]
    lines = [
        "# Compression quality report", "",
        f"Held-out perplexity: {report.text_data} (test split, {report.limit} texts); exact match: "
        f"{report.task_data} (test split, {report.limit} problems, greedy); decode: median tokens/s of "
        f"{len(base.decode_runs)} runs of {report.decode_tokens} new tokens, one thread. Machine: {report.machine}. "
        f"Measured in one run, {report.seconds:.0f} s.", "",
        "| model | method | runtime | size on disk | params | load memory | perplexity | exact match | "
        "decode tok/s (median, range) | size vs original | speed vs original (same runtime) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speed = "-" if row.decode_tokens_per_second is None else (
            f"{row.decode_tokens_per_second:.1f} ({min(row.decode_runs):.1f}-{max(row.decode_runs):.1f})")
        lines.append(
            f"| {row.name} | {row.method} | {row.runtime} | {row.size_bytes:,} B | "
            f"{'-' if row.params is None else f'{row.params:,}'} | "
            f"{'-' if row.load_bytes is None else f'{row.load_bytes:,} B'} | "
            f"{'-' if row.perplexity is None else f'{row.perplexity:.3f}'} | "
            f"{'-' if row.exact_match is None else f'{row.exact_match:.1%}'} | {speed} | "
            f"{_ratio(row.size_bytes, base.size_bytes)} | "
            f"{_ratio(row.decode_tokens_per_second, same_runtime[row.runtime].decode_tokens_per_second)} |")
    notes = [f"- {row.name}: {note}" for row in rows for note in row.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def plot(report: QualityReport, path: Path) -> Path:
    """Perplexity and exact match against size on disk, the original marked: the size/quality curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [report.original, *report.compressed]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, label in ((left, "perplexity", "held-out perplexity (lower is better)"),
                             (right, "exact_match", "exact match (higher is better)")):
        points = [(row.size_bytes / 1e6, getattr(row, key), row.method) for row in rows if getattr(row, key) is not None]
        for x, y, method in points:
            axis.scatter([x], [y], marker="*" if method == "original" else "o", s=80 if method == "original" else 30)
            axis.annotate(method, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel("size on disk (MB)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    figure.suptitle(f"compression of {report.original.name}: quality against size")
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=110)


def write_quality_report(report: QualityReport, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """report.md, report.json and report.png in `out_dir`."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return {"markdown": atomic_write_text(folder / "report.md", render_markdown(report)),
            "json": atomic_write_json(folder / "report.json", report.to_dict()),
            "plot": plot(report, folder / "report.png")}
