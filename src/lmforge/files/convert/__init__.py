"""`lmforge convert`: one function per conversion, picked by --to or the destination's suffix.

    pickle checkpoint / HF folder → safetensors   (to_safetensors)
    safetensors / HF Llama-family folder → GGUF    (to_gguf, f32 f16 bf16 q8_0 q4_0 q4_k_m q5_k_m q6_k)
    HF model folder → ONNX                         (to_onnx)
    LoRA adapter + base → merged safetensors model (merge_lora)

Each reads its input through lmforge's safe gates, writes atomically and reads its output back.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmforge.errors import NotFoundError, UserInputError
from lmforge.files.convert.common import ConvertReport, parse_size_bytes

TARGETS = ("safetensors", "gguf", "onnx", "merged")
_BY_SUFFIX = {".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx"}

__all__ = ["TARGETS", "ConvertReport", "convert_model", "parse_size_bytes"]


def pick_target(source: Path, destination: Path, to: str | None, adapter: Path | None) -> str:
    """--to if given, else the destination suffix, else a merge when an adapter is involved, else safetensors."""
    if to is not None:
        if to not in TARGETS:
            raise UserInputError(f"unknown --to {to!r}; choose one of {', '.join(TARGETS)}")
        return to
    if destination.suffix in _BY_SUFFIX:
        return _BY_SUFFIX[destination.suffix]
    if adapter is not None or (source / "adapter_config.json").is_file():
        return "merged"
    return "safetensors"


def convert_model(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    to: str | None = None,
    quant: str | None = None,
    shard_size: str | int = "5GB",
    adapter: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
    progress: bool = True,
    pre_tokenizer: str | None = None,
) -> ConvertReport:
    """Convert `src` into `dst`; see the module docstring for the conversions.

    `src` and `adapter` are on this machine: what a user typed (a hub id, a training run) is resolved first by
    lmforge.hub.locate_model, as `lmforge convert` does. `quant` applies to GGUF only (default f16), and so does
    `pre_tokenizer` (a llama.cpp name that overrides detection); `shard_size` to safetensors output; `adapter`
    names the LoRA adapter folder to merge into the base model `src`.
    """
    # Each conversion reads its input through the safe gates.
    source, destination = Path(src), Path(dst)
    adapter_path = Path(adapter) if adapter is not None else None
    for given in (source, adapter_path):
        if given is not None and not given.exists():
            raise NotFoundError(f"{given} does not exist; give a model file or folder")
    if source.resolve() == destination.resolve():
        raise UserInputError("source and destination are the same path; choose a new DST")
    target = pick_target(source, destination, to, adapter_path)
    if quant is not None and target != "gguf":
        raise UserInputError(f"--quant applies to GGUF output only, not {target}")
    if pre_tokenizer is not None and target != "gguf":
        raise UserInputError(f"--pre-tokenizer applies to GGUF output only, not {target}")
    if adapter_path is not None and target != "merged":
        raise UserInputError(f"--adapter is for merging a LoRA adapter (--to merged), not {target}")
    if (
        target in ("gguf", "onnx")
        and (source / "adapter_config.json").is_file()
        and not (source / "config.json").is_file()
    ):
        return _merged_then(source, destination, target, quant, trust_pickle, progress)

    if target == "safetensors":
        from lmforge.files.convert.to_safetensors import to_safetensors

        return to_safetensors(
            source,
            destination,
            shard_size_bytes=parse_size_bytes(shard_size),
            trust_pickle=trust_pickle,
            progress=progress,
        )
    if target == "gguf":
        from lmforge.files.convert.to_gguf import to_gguf

        return to_gguf(
            source,
            destination,
            quant=quant or "f16",
            pre_tokenizer=pre_tokenizer,
            trust_pickle=trust_pickle,
            progress=progress,
        )
    if target == "onnx":
        from lmforge.files.convert.to_onnx import to_onnx

        return to_onnx(source, destination, trust_pickle=trust_pickle, progress=progress)
    from lmforge.files.convert.merge_lora import merge_lora

    return merge_lora(source, destination, adapter=adapter_path, trust_pickle=trust_pickle, progress=progress)


def _merged_then(
    adapter: Path, destination: Path, target: str, quant: str | None, trust_pickle: bool, progress: bool
) -> ConvertReport:
    """GGUF and ONNX hold whole models: a LoRA adapter is merged into its base first (in a temporary folder
    beside DST, removed afterwards), then that model is converted."""
    import tempfile

    from lmforge.files.convert.merge_lora import merge_lora

    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lmforge-merge-", dir=destination.parent) as scratch:
        merged = merge_lora(adapter, Path(scratch) / "merged", trust_pickle=trust_pickle, progress=progress)
        report = convert_model(
            Path(scratch) / "merged", destination, to=target, quant=quant, trust_pickle=trust_pickle, progress=progress
        )
    report.source = str(adapter)
    report.checks = {**merged.checks, **report.checks}
    report.notes.insert(
        0,
        f"{adapter} is a LoRA adapter: merged into its base {merged.checks['base']} first "
        f"(logits within {merged.checks['max_abs_logit_difference']:.1e}), then converted",
    )
    return report
