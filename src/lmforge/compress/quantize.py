"""`lmforge compress quantize`: a float model → a quantized model its target runtime loads.

- gguf-{f16,q8_0,q4_0,q4_k_m,q5_k_m,q6_k}: one .gguf file for llama.cpp (lmforge.files.convert.to_gguf,
  K-quants after ggml's reference quantizers; pre-tokenizer checked against llama.cpp's).
- bnb-int8 / bnb-nf4: bitsandbytes LLM.int8 (Dettmers et al. 2022) / NF4 (QLoRA, Dettmers et al. 2023)
  through transformers' BitsAndBytesConfig, saved with save_pretrained: config.json carries the
  quantization_config, so `from_pretrained(OUT)` (and every lmforge command) reloads it quantized.
  bitsandbytes' CPU backend runs both. An encoder (MiniLM, a BERT) is quantized as an AutoModel and keeps its
  sentence-transformers files, so SentenceTransformer(OUT) and lmforge serve's /v1/embeddings load it too.
  GGUF is for decoders (lmforge's writer and llama.cpp runs): an encoder is refused.
- torchao int8/int4 and GPTQ are not available here; asking for them says why (docs/compress.md).
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
METHODS = (*GGUF_METHODS, *BNB_METHODS)
# Asked for, but not runnable with this project's pinned stack (see docs/compress.md for the measurements).
_UNAVAILABLE = {
    "torchao-int8": "torchao 0.18 installs for torch 2.13 CPU, but once installed transformers imports it on every "
    "model load (its quantizer registry), adding seconds and warnings to every lmforge command; it is "
    "not a dependency until that trade-off is decided",
    "torchao-int4": "see torchao-int8; torchao's int4 weight-only CPU kernels also need its packed layout",
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
        from lmforge.compress.encoder import is_encoder
        from lmforge.files.convert import convert_model

        if is_encoder(source):
            raise UserInputError(
                f"{method}: {source.name} is an encoder; lmforge writes GGUF for decoders only "
                f"(use {' or '.join(BNB_METHODS)}, prune or factorize)"
            )
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
    checks = _bitsandbytes(source, target, method)
    return QuantizeResult(
        str(source), str(target), method, size_on_disk(target), time.perf_counter() - started, checks=checks
    )


def _bitsandbytes(source: Path, target: Path, method: str) -> dict[str, Any]:
    """Quantize while loading (transformers + bitsandbytes), save, reload from disk (what every later
    command does) and compare its logits (an encoder's hidden states) with the float model's on a probe."""
    import torch
    from transformers import AutoTokenizer

    from lmforge.compress import encoder
    from lmforge.generate.load import quantization_config
    from lmforge.runtime import no_hub_kernels

    no_hub_kernels()
    config = quantization_config("int8" if method == "bnb-int8" else "nf4", torch.float32)
    is_encoder = encoder.is_encoder(source)
    model_class = encoder.auto_class(is_encoder)
    model = model_class.from_pretrained(source, quantization_config=config, device_map="cpu", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    with atomic_directory(target) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if is_encoder:
            encoder.copy_sentence_transformers_files(source, folder)
        reloaded = model_class.from_pretrained(folder, device_map="cpu")
        quantized = sum(type(m).__name__ in ("Linear8bitLt", "Linear4bit") for m in reloaded.modules())
        if quantized == 0:
            raise DependencyError(
                f"{method}: the reloaded model has no bitsandbytes layers; is bitsandbytes installed?"
            )
        original = model_class.from_pretrained(source, dtype=torch.float32)
        probe = torch.arange(min(16, original.config.vocab_size))[None]
        with torch.inference_mode():  # [0]: the logits, or an encoder's last hidden state
            reference, after = original(probe)[0], reloaded(probe)[0].float()
    output = "hidden_state" if is_encoder else "logit"
    return {
        "quantized_layers": quantized,
        f"max_{output}_difference_vs_float": float((reference - after).abs().max()),
        f"{output}_scale": float(reference.abs().max()),
    }
