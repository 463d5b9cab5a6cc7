"""The one quality report every compression method gets: what it saved, what it cost, beside the original.

For each model (the original first, measured in the same run):
- size on disk: the weight files (a folder's safetensors, or the .gguf file);
- parameters: as the model holds them (a pruned-to-zero weight still counts; a removed channel does not);
- load memory: bytes of parameters and buffers once loaded (as transformers' get_memory_footprint counts
  them, but a torchao weight counts the tensors it holds, not its float shape), or for
  a GGUF in llama.cpp the file itself (llama.cpp maps it);
- held-out perplexity on text (default builtin:corpus, test split) and greedy exact match on chat
  problems (default builtin:arith-sft, test split), through lmforge.evaluate (a GGUF is read by
  transformers' GGUF loader, which dequantizes it: quality of the quantized weights);
- CPU decode tokens/s: median (and range) of >= 3 greedy runs of a fixed number of new tokens, in the
  runtime the format is for (llama.cpp for GGUF, transformers otherwise), one thread each, interleaved
  across the models (round after round) so a shared machine's changing load falls on all of them alike;
  every model stays loaded for the timing pass, so the machine must hold them all at once.
An encoder (a sentence embedder such as MiniLM: lmforge.compress.encoder) has no perplexity or generation:
its report embeds the held-out sentences (`text_data`) with every model through serve's Embedder and gives,
instead of perplexity, exact match and decode speed, the mean cosine similarity of each sentence's vector to
the original's, top-1 retrieval agreement with the original, and CPU encode sentences/s (same interleaving).
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
    # encoders (None for a decoder, whose perplexity / exact match / decode figures are None instead):
    mean_cosine: float | None = None  # mean cosine of each held-out sentence's vector to the original's
    top1_agreement: float | None = None  # share of sentences whose nearest neighbour is the original's
    encode_sentences_per_second: float | None = None  # median over the runs
    encode_runs: list[float] = field(default_factory=list)  # sentences/s of every run


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
    kind: str = "decoder"  # "encoder": the figures are embedding agreement and encode speed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def size_on_disk(path: Path) -> int:
    """Bytes of the weight files: the file itself, or a folder's weights (config and tokenizer excluded)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)


def _model_format(path: Path) -> str:
    return "gguf" if path.suffix == ".gguf" else "hf"


def loaded_bytes(model: Any) -> int:
    """Bytes of a loaded model's parameters and buffers. transformers' get_memory_footprint multiplies each
    tensor's elements by its element size, which for a torchao weight (a tensor subclass that presents the
    float dtype) is the float size: such a weight counts its inner tensors (int8 data, scales, zero points)."""
    import itertools

    total = 0
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        flatten = getattr(tensor, "__tensor_flatten__", None)
        if flatten is not None:
            total += sum(getattr(tensor, name).nbytes for name in flatten()[0])
        else:
            total += tensor.nelement() * tensor.element_size()
    return total


class _TransformersDecoder:
    """One model kept loaded in transformers; `once()` times one greedy decode of exactly n new tokens."""

    def __init__(self, path: str, decode_tokens: int):
        from lmforge.generate.load import load_model

        loaded = load_model(path, device="cpu")
        self.model, self.tokenizer, self.decode_tokens = loaded.model, loaded.tokenizer, decode_tokens
        prompt = loaded.render_chat([{"role": "user", "content": _DECODE_PROMPT}])
        self.ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        # a GPTQ layer keeps its weights as packed int32 buffers (qweight), which num_parameters leaves out
        packed = sum(m.in_features * m.out_features for m in self.model.modules() if hasattr(m, "qweight"))
        self.params, self.load_bytes = int(self.model.num_parameters()) + packed, loaded_bytes(self.model)

    def once(self) -> float:
        import torch

        with torch.inference_mode():
            started = time.perf_counter()
            self.model.generate(
                self.ids,
                max_new_tokens=self.decode_tokens,
                min_new_tokens=self.decode_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            return self.decode_tokens / (time.perf_counter() - started)


class _LlamaCppDecoder:
    """A GGUF timed in llama.cpp: each `once()` is a fresh process; its second decode is timed (the first warms up)."""

    def __init__(self, path: Path, decode_tokens: int):
        from lmforge.generate.load import load_model

        self.path, self.decode_tokens = path, decode_tokens
        self.prompt = load_model(str(path), device="cpu").render_chat([{"role": "user", "content": _DECODE_PROMPT}])

    def once(self) -> float:
        from lmforge.files.llama_cpp import run_llama_cpp

        results, _ = run_llama_cpp(
            self.path, prompts=[self.prompt, self.prompt], max_tokens=self.decode_tokens, threads=1
        )
        timed = results[-1]
        return timed.decode_tokens / timed.decode_seconds if timed.decode_seconds > 0 else 0.0


def _gguf_params(path: Path) -> int:
    import gguf

    return int(sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors))


def _quality(path: Path, method: str, text_data: str, task_data: str, limit: int) -> ModelQuality:
    """Size, perplexity and exact match (speed, params and load memory are filled in by the timing pass)."""
    from lmforge.evaluate.run import evaluate_model
    from lmforge.generate.sampling import SamplingParams

    if not path.exists():
        raise UserInputError(f"{path} does not exist")
    perplexity = evaluate_model(str(path), text_data, task="perplexity", limit=limit).summary["perplexity"]
    exact = evaluate_model(
        str(path), task_data, task="generation", limit=limit, params=SamplingParams(temperature=0, max_new_tokens=24)
    ).summary["exact_match"]
    return ModelQuality(
        name=path.name,
        path=str(path),
        method=method,
        runtime="transformers",
        size_bytes=size_on_disk(path),
        params=None,
        load_bytes=None,
        perplexity=float(perplexity),
        exact_match=float(exact),
        decode_tokens_per_second=None,
    )


def _time_all(rows: list[ModelQuality], decode_tokens: int, runs: int) -> None:
    """Decode speed of every model, interleaved: each round times every model once (starting at a different
    model each round), after one warm-up round, so a shared machine's load drifts over all of them alike."""

    from lmforge.files.llama_cpp import llama_cpp_available

    decoders: list[Any] = []
    for row in rows:
        path = Path(row.path)
        if _model_format(path) == "gguf" and llama_cpp_available():
            row.runtime, row.params, row.load_bytes = "llama.cpp", _gguf_params(path), path.stat().st_size
            decoders.append(_LlamaCppDecoder(path, decode_tokens))
        else:
            decoder = _TransformersDecoder(row.path, decode_tokens)
            row.params, row.load_bytes = decoder.params, decoder.load_bytes
            if _model_format(path) == "gguf":
                row.params, row.load_bytes = _gguf_params(path), path.stat().st_size
                row.notes.append("llama.cpp is not installed: speed measured in transformers on dequantized weights")
            decoders.append(decoder)
    for row, speeds in zip(rows, _interleaved(decoders, runs)):
        row.decode_runs = speeds
        row.decode_tokens_per_second = statistics.median(speeds) if speeds else None


def _interleaved(timers: list[Any], runs: int) -> list[list[float]]:
    """`runs` speeds of every timer (its `once()`), one thread: after a warm-up round, each round times every
    model once, starting at a different one, so a shared machine's load drifts over all of them alike."""
    import torch

    speeds: list[list[float]] = [[] for _ in timers]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # comparable across runtimes, and two threads on a shared 2-core box thrash
    try:
        for round_index in range(runs + 1):
            for offset in range(len(timers)):
                index = (round_index + offset) % len(timers)
                speed = timers[index].once()
                if round_index > 0:
                    speeds[index].append(speed)
    finally:
        torch.set_num_threads(threads)
    return speeds


def _encoder_rows(original: Path, compressed: list[tuple[str, str]], text_data: str, limit: int, runs: int) -> Any:
    """The original encoder and every compressed one: size, params, load memory, embedding agreement with the
    original on the held-out sentences, and encode speed (interleaved; every model stays loaded)."""
    from lmforge.compress.encoder import TimedEncoder, agreement, held_out_sentences

    sentences = held_out_sentences(text_data, limit)
    rows: list[ModelQuality] = []
    timers: list[TimedEncoder] = []
    for path, method in [(str(original), "original"), *compressed]:
        if not Path(path).is_dir():
            raise UserInputError(f"{path}: the report on an encoder compares model folders (a GGUF is for decoders)")
        timer = TimedEncoder(path, sentences)
        cosine, top1 = agreement(timers[0].vectors if timers else timer.vectors, timer.vectors)
        row = ModelQuality(
            name=Path(path).name,
            path=path,
            method=method,
            runtime="transformers",
            size_bytes=size_on_disk(Path(path)),
            params=timer.params,
            load_bytes=timer.load_bytes,
            perplexity=None,
            exact_match=None,
            decode_tokens_per_second=None,
            mean_cosine=cosine,
            top1_agreement=top1,
        )
        if timer.truncated:
            row.notes.append(
                f"{timer.truncated} of {len(sentences)} sentences cut to {timer.embedder.max_tokens} tokens"
            )
        rows.append(row)
        timers.append(timer)
    for row, speeds in zip(rows, _interleaved(timers, runs)):
        row.encode_runs, row.encode_sentences_per_second = speeds, statistics.median(speeds)
    return rows, len(sentences)


def measure(
    path: str | os.PathLike[str],
    *,
    method: str = "original",
    text_data: str = DEFAULT_TEXT_DATA,
    task_data: str = DEFAULT_TASK_DATA,
    limit: int = 50,
    decode_tokens: int = 32,
    runs: int = 3,
) -> ModelQuality:
    """Every figure of the report for one model (a model folder, run folder or .gguf file)."""
    from lmforge.compress.encoder import is_encoder

    if runs < 3:
        raise UserInputError(f"--runs must be at least 3 (a median needs them), got {runs}")
    if Path(path).is_dir() and is_encoder(Path(path)):
        row = _encoder_rows(Path(path), [], text_data, limit, runs)[0][0]
        row.method = method  # agreement with itself: cosine 1, top-1 100%; size, memory and speed are its own
        return row
    row = _quality(Path(path), method, text_data, task_data, limit)
    _time_all([row], decode_tokens, runs)
    return row


def compare(
    original: str | os.PathLike[str],
    compressed: list[tuple[str, str]],
    *,
    text_data: str = DEFAULT_TEXT_DATA,
    task_data: str = DEFAULT_TASK_DATA,
    limit: int = 50,
    decode_tokens: int = 32,
    runs: int = 3,
) -> QualityReport:
    """The original and every (path, method) in `compressed`, measured now in one process: quality one
    model after another, decode speed interleaved across all of them (every model stays loaded). When a
    result is a GGUF and llama.cpp is installed, the original is also converted to an f32 GGUF and timed
    in llama.cpp, so GGUF speeds are compared within one runtime. An encoder original (compress.encoder) gets
    the encoder figures: embedding agreement on `text_data`'s sentences and encode speed."""
    import platform
    import tempfile

    from lmforge.compress.encoder import is_encoder
    from lmforge.files.llama_cpp import llama_cpp_available

    if runs < 3:
        raise UserInputError(f"--runs must be at least 3 (a median needs them), got {runs}")
    started = time.perf_counter()
    load_before = os.getloadavg()[0]

    def _report(rows: list[ModelQuality], base_gguf: ModelQuality | None, *, kind: str, limit: int) -> QualityReport:
        """The report of this run: the machine and its load before and after, beside the rows measured."""
        return QualityReport(
            original=rows[0],
            compressed=rows[1:],
            original_llama_cpp=base_gguf,
            text_data=text_data,
            task_data=task_data,
            limit=limit,
            decode_tokens=decode_tokens,
            seconds=time.perf_counter() - started,
            machine=f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
            kind=kind,
        )

    if Path(original).is_dir() and is_encoder(Path(original)):
        rows, limit = _encoder_rows(Path(original), compressed, text_data, limit, runs)
        return _report(rows, None, kind="encoder", limit=limit)
    rows = [_quality(Path(original), "original", text_data, task_data, limit)]
    rows += [_quality(Path(path), method, text_data, task_data, limit) for path, method in compressed]
    with tempfile.TemporaryDirectory() as scratch:
        base_gguf = None
        if (
            any(Path(path).suffix == ".gguf" for path, _ in compressed)
            and llama_cpp_available()
            and Path(original).suffix != ".gguf"
        ):
            from lmforge.files.convert import convert_model
            from lmforge.hub.reference import locate_model

            f32 = Path(scratch) / f"{Path(original).name}-f32.gguf"
            convert_model(locate_model(str(original), need="any").path, f32, to="gguf", quant="f32", progress=False)
            base_gguf = _quality(f32, "original (gguf-f32)", text_data, task_data, limit)
        _time_all([*rows, *([base_gguf] if base_gguf else [])], decode_tokens, runs)
    return _report(rows, base_gguf, kind="decoder", limit=limit)


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}×"


def _source(data: str) -> str:
    return f"{data} (test split)" if data.startswith("builtin:") else data


def _median_range(median: float | None, runs: list[float]) -> str:
    return "-" if median is None else f"{median:.1f} ({min(runs):.1f}-{max(runs):.1f})"


def _render_encoder(report: QualityReport) -> str:
    """An encoder's table: size, params, load memory, agreement with the original's embeddings, encode speed."""
    base = report.original
    lines = [
        "# Compression quality report (encoder)",
        "",
        f"Embeddings of {report.limit} held-out sentences ({_source(report.text_data)}) through lmforge serve's "
        "/v1/embeddings code path; mean cosine: of each sentence's vector to the original's; top-1 agreement: "
        "share of sentences whose nearest neighbour among the others (cosine) is the original's; encode: median "
        f"(range) sentences/s of {len(base.encode_runs)} runs over all of them per model, interleaved across "
        f"models, one thread. Machine: {report.machine}. Measured in one run, {report.seconds:.0f} s.",
        "",
        "| model | method | size on disk | params | load memory | mean cosine to original | top-1 agreement | "
        "encode sentences/s (median, range) | size vs original | speed vs original |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in [base, *report.compressed]:
        lines.append(
            f"| {row.name} | {row.method} | {row.size_bytes:,} B | "
            f"{'-' if row.params is None else f'{row.params:,}'} | "
            f"{'-' if row.load_bytes is None else f'{row.load_bytes:,} B'} | "
            f"{'-' if row.mean_cosine is None else f'{row.mean_cosine:.4f}'} | "
            f"{'-' if row.top1_agreement is None else f'{row.top1_agreement:.1%}'} | "
            f"{_median_range(row.encode_sentences_per_second, row.encode_runs)} | "
            f"{_ratio(row.size_bytes, base.size_bytes)} | "
            f"{_ratio(row.encode_sentences_per_second, base.encode_sentences_per_second)} |"
        )
    notes = [f"- {row.name}: {note}" for row in [base, *report.compressed] for note in row.notes]
    return "\n".join(lines + (["", "Notes:", *notes] if notes else [])) + "\n"


def render_markdown(report: QualityReport) -> str:
    """The side-by-side table: every figure beside the original's, with the ratio to it."""
    if report.kind == "encoder":
        return _render_encoder(report)
    base = report.original
    same_runtime = {"llama.cpp": report.original_llama_cpp or base, "transformers": base}
    rows = [base, *([report.original_llama_cpp] if report.original_llama_cpp else []), *report.compressed]
    lines = [
        "# Compression quality report",
        "",
        f"Held-out perplexity: {_source(report.text_data)}, {report.limit} texts; exact match: "
        f"{_source(report.task_data)}, {report.limit} problems, greedy; decode: median (range) tokens/s of "
        f"{len(base.decode_runs)} runs of {report.decode_tokens} new tokens per model, interleaved across models, "
        f"one thread. Machine: {report.machine}. Measured in one run, {report.seconds:.0f} s.",
        "",
        "| model | method | runtime | size on disk | params | load memory | perplexity | exact match | "
        "decode tok/s (median, range) | size vs original | speed vs original (same runtime) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speed = _median_range(row.decode_tokens_per_second, row.decode_runs)
        lines.append(
            f"| {row.name} | {row.method} | {row.runtime} | {row.size_bytes:,} B | "
            f"{'-' if row.params is None else f'{row.params:,}'} | "
            f"{'-' if row.load_bytes is None else f'{row.load_bytes:,} B'} | "
            f"{'-' if row.perplexity is None else f'{row.perplexity:.3f}'} | "
            f"{'-' if row.exact_match is None else f'{row.exact_match:.1%}'} | {speed} | "
            f"{_ratio(row.size_bytes, base.size_bytes)} | "
            f"{_ratio(row.decode_tokens_per_second, same_runtime[row.runtime].decode_tokens_per_second)} |"
        )
    notes = [f"- {row.name}: {note}" for row in rows for note in row.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def plot(report: QualityReport, path: Path) -> Path:
    """Perplexity and exact match (an encoder's mean cosine and top-1 agreement) against size on disk, the
    original marked: the size/quality curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [report.original, *report.compressed]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    panels = (
        (
            (left, "mean_cosine", "mean cosine to the original's embeddings"),
            (right, "top1_agreement", "top-1 agreement"),
        )
        if report.kind == "encoder"
        else (
            (left, "perplexity", "held-out perplexity (lower is better)"),
            (right, "exact_match", "exact match (higher is better)"),
        )
    )
    for axis, key, label in panels:
        points = [
            (row.size_bytes / 1e6, getattr(row, key), row.method) for row in rows if getattr(row, key) is not None
        ]
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
    return {
        "markdown": atomic_write_text(folder / "report.md", render_markdown(report)),
        "json": atomic_write_json(folder / "report.json", report.to_dict()),
        "plot": plot(report, folder / "report.png"),
    }
