"""`lmforge compress quantize`: a float model → a quantized model its target runtime loads.

- gguf-{f16,q8_0,q4_0,q4_k_m,q5_k_m,q6_k}: one .gguf file for llama.cpp (lmforge.files.convert.to_gguf,
  K-quants after ggml's reference quantizers; pre-tokenizer checked against llama.cpp's).
- bnb-int8 / bnb-nf4: bitsandbytes LLM.int8 (Dettmers et al. 2022) / NF4 (QLoRA, Dettmers et al. 2023)
  through transformers' BitsAndBytesConfig, saved with save_pretrained: config.json carries the
  quantization_config, so `from_pretrained(OUT)` (and every lmforge command) reloads it quantized.
  bitsandbytes' CPU backend runs both.
- torchao-int8 / torchao-int4: torchao weight-only int8 (one scale per output row) / int4 (groups of 32 input
  features, IntxWeightOnlyConfig: the CPU-runnable int4; stored unpacked in int8, so int4 costs int8's
  disk and memory) through transformers' TorchAoConfig, saved as safetensors (torchao's flattened tensors:
  JSON metadata names an allow-listed tensor class, nothing is pickled), reloaded by `from_pretrained(OUT)`.
- GPTQ is not available here; asking for it says why (docs/compress.md).
Every output is read back in its target runtime before success is reported.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import DependencyError, UserInputError
from lmforge.fileio import atomic_directory

GGUF_METHODS = ("gguf-f16", "gguf-q8_0", "gguf-q4_0", "gguf-q4_k_m", "gguf-q5_k_m", "gguf-q6_k")
BNB_METHODS = ("bnb-int8", "bnb-nf4")
TORCHAO_METHODS = ("torchao-int8", "torchao-int4")
METHODS = (*GGUF_METHODS, *BNB_METHODS, *TORCHAO_METHODS)
# Asked for, but not runnable with this project's pinned stack (see docs/compress.md for the measurements).
_UNAVAILABLE = {
    "gptq": "gptqmodel 7.7 pulls torch 2.14 with CUDA wheels and llmcompressor 0.14 pins transformers 5.17 "
    "(lmforge runs 5.25); neither installs beside lmforge's stack",
}


@dataclass
class QuantizeResult:
    """What quantize wrote and how it was read back."""

    source: str
    output: str
    method: str
    size_bytes: int
    seconds: float
    checks: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize(
    model: str | os.PathLike[str], out: str | os.PathLike[str], *, method: str, progress: bool = False
) -> QuantizeResult:
    """Quantize the HF model folder `model` into `out` (a .gguf file for gguf-*, a folder otherwise)."""
    from lmforge.compress.report import size_on_disk
    from lmforge.hub.reference import locate_model

    if method in _UNAVAILABLE:
        raise DependencyError(f"--method {method} is not available: {_UNAVAILABLE[method]}")
    if method not in METHODS:
        raise UserInputError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    source = locate_model(str(model)).path
    target = Path(out)
    started = time.perf_counter()
    if method in GGUF_METHODS:
        from lmforge.files.convert import convert_model

        if target.suffix != ".gguf":
            raise UserInputError(f"{method} writes one file: give OUT a .gguf name, not {target}")
        report = convert_model(source, target, to="gguf", quant=method.removeprefix("gguf-"), progress=progress)
        return QuantizeResult(
            str(source),
            str(target),
            method,
            report.size_bytes,
            time.perf_counter() - started,
            checks=report.checks,
            notes=report.notes,
        )
    checks = _torchao(source, target, method) if method in TORCHAO_METHODS else _bitsandbytes(source, target, method)
    return QuantizeResult(
        str(source), str(target), method, size_on_disk(target), time.perf_counter() - started, checks=checks
    )


def _bitsandbytes(source: Path, target: Path, method: str) -> dict[str, Any]:
    """Quantize while loading (transformers + bitsandbytes), save, reload from disk (what every later
    command does) and compare its logits with the float model's on a probe."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.generate.load import quantization_config
    from lmforge.runtime import no_hub_kernels

    no_hub_kernels()
    config = quantization_config("int8" if method == "bnb-int8" else "nf4", torch.float32)
    model = AutoModelForCausalLM.from_pretrained(
        source, quantization_config=config, device_map="cpu", dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(source)
    with atomic_directory(target) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        reloaded = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")
        quantized = sum(type(m).__name__ in ("Linear8bitLt", "Linear4bit") for m in reloaded.modules())
        if quantized == 0:
            raise DependencyError(
                f"{method}: the reloaded model has no bitsandbytes layers; is bitsandbytes installed?"
            )
        original = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        probe = torch.arange(min(16, original.config.vocab_size))[None]
        with torch.inference_mode():
            reference, after = original(probe).logits, reloaded(probe).logits
    return {
        "quantized_layers": quantized,
        "max_logit_difference_vs_float": float((reference - after).abs().max()),
        "logit_scale": float(reference.abs().max()),
    }


def _torchao(source: Path, target: Path, method: str) -> dict[str, Any]:
    """Quantize while loading (transformers' TorchAoConfig), save as safetensors, reload from disk (what every
    later command does) and compare its logits with the float model's on a probe."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.generate.load import torchao_config
    from lmforge.runtime import no_hub_kernels

    no_hub_kernels()
    config = torchao_config(method.removeprefix("torchao-"))
    model = AutoModelForCausalLM.from_pretrained(
        source, quantization_config=config, device_map="cpu", dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(source)
    with atomic_directory(target) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        pickles = sorted(p.name for p in Path(folder).iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        if pickles or not any(Path(folder).glob("*.safetensors")):
            raise DependencyError(
                f"{method}: transformers saved {pickles or 'no safetensors'}; lmforge writes "
                "no pickle (upgrade transformers and torchao)"
            )
        reloaded = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu", use_safetensors=True)
        quantized = sum(
            type(m.weight).__module__.startswith("torchao.")
            for m in reloaded.modules()
            if isinstance(m, torch.nn.Linear)
        )
        if quantized == 0:
            raise DependencyError(f"{method}: the reloaded model has no torchao-quantized layers")
        original = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        probe = torch.arange(min(16, original.config.vocab_size))[None]
        with torch.inference_mode():
            reference, after = original(probe).logits, reloaded(probe).logits
    return {
        "quantized_layers": quantized,
        "max_logit_difference_vs_float": float((reference - after).abs().max()),
        "logit_scale": float(reference.abs().max()),
    }
