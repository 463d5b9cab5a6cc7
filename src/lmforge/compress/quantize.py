"""`lmforge compress quantize`: a float model → a quantized model its target runtime loads.

- gguf-{f16,q8_0,q4_0,q4_k_m,q5_k_m,q6_k}: one .gguf file for llama.cpp (lmforge.files.convert.to_gguf,
  K-quants after ggml's reference quantizers; pre-tokenizer checked against llama.cpp's).
- bnb-int8 / bnb-nf4: bitsandbytes LLM.int8 (Dettmers et al. 2022) / NF4 (QLoRA, Dettmers et al. 2023)
  through transformers' BitsAndBytesConfig, saved with save_pretrained: config.json carries the
  quantization_config, so `from_pretrained(OUT)` (and every lmforge command) reloads it quantized.
  bitsandbytes' CPU backend runs both. An encoder (MiniLM, a BERT) is quantized as an AutoModel and keeps its
  sentence-transformers files, so SentenceTransformer(OUT) and lmforge serve's /v1/embeddings load it too.
  GGUF is for decoders (lmforge's writer and llama.cpp runs): an encoder is refused.
- torchao-int8 / torchao-int4: torchao weight-only int8 (one scale per output row) / int4 (groups of 32 input
  features, IntxWeightOnlyConfig: the CPU-runnable int4; stored unpacked in int8, so int4 costs int8's
  disk and memory) through transformers' TorchAoConfig, saved as safetensors (torchao's flattened tensors:
  JSON metadata names an allow-listed tensor class, nothing is pickled), reloaded by `from_pretrained(OUT)`.
- gptq: 4-bit GPTQ (Frantar et al. 2022: each column rounded in turn, the error pushed onto the columns not
  yet rounded through the inverse Hessian of the calibration inputs) by gptqmodel, the optional extra
  `lmforge[gptq]` (llm-compressor pins an older transformers), calibrated on texts from any lmforge data
  source; saved in gptqmodel's GPTQ format (safetensors + quantization_config), which transformers reloads
  through optimum + gptqmodel.
Every output is read back in its target runtime before success is reported.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import DependencyError, UserInputError
from lmforge.fileio import atomic_directory

GGUF_METHODS = ("gguf-f16", "gguf-q8_0", "gguf-q4_0", "gguf-q4_k_m", "gguf-q5_k_m", "gguf-q6_k")
BNB_METHODS = ("bnb-int8", "bnb-nf4")
TORCHAO_METHODS = ("torchao-int8", "torchao-int4")
METHODS = (*GGUF_METHODS, *BNB_METHODS, *TORCHAO_METHODS, "gptq")


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
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    method: str,
    progress: bool = False,
    calibration: str = "builtin:corpus",
    samples: int = 32,
) -> QuantizeResult:
    """Quantize the HF model folder `model` into `out` (a .gguf file for gguf-*, a folder otherwise).
    gptq calibrates on `samples` examples of the lmforge data source `calibration`."""
    from lmforge.compress.report import size_on_disk
    from lmforge.hub.reference import locate_model

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
    if method == "gptq":
        checks = _gptq(source, target, calibration, samples)
    elif method in TORCHAO_METHODS:
        checks = _torchao(source, target, method)
    else:
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
        return {"quantized_layers": quantized, **_logits_versus_float(source, reloaded)}


def _gptq(source: Path, target: Path, calibration: str, samples: int) -> dict[str, Any]:
    """4-bit GPTQ with gptqmodel on `samples` calibration texts, saved, reloaded by transformers (optimum +
    gptqmodel, as every later command loads it) and compared with the float model's logits on a probe."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lmforge.compress.prune import calibration_texts
    from lmforge.runtime import no_hub_kernels

    no_hub_kernels()
    # gptqmodel 7.6 sizes its CPU worker pool at (cores + 1) // 2, then asks it for 2 loader workers: on a
    # 2-core machine that is "requests 2 workers but parent 'cpu' only has 1". A user's own setting stays.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    try:
        from gptqmodel import GPTQModel, QuantizeConfig
    except ImportError:
        raise DependencyError("--method gptq needs gptqmodel: pip install 'lmforge[gptq]'") from None
    tokenizer = AutoTokenizer.from_pretrained(source)
    examples = [dict(tokenizer(text)) for text in calibration_texts(calibration, samples, tokenizer)]
    config = AutoConfig.from_pretrained(source)
    # GPTQ's usual group of 128 input features where every linear's width divides by it, else 32 (tiny models)
    widths = (config.hidden_size, getattr(config, "intermediate_size", config.hidden_size))
    group = 128 if all(width % 128 == 0 for width in widths) else 32
    model = GPTQModel.load(str(source), QuantizeConfig(bits=4, group_size=group, offload_to_disk=False), device="cpu")
    # gptqmodel 7.6 writes a per-run log into ./logs of the working directory; keep it out of the user's folder
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        model.quantize(examples, batch_size=4)
    with atomic_directory(target) as folder:
        model.save(str(folder))
        tokenizer.save_pretrained(folder)
        pickles = sorted(p.name for p in Path(folder).iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        if pickles:
            raise DependencyError(f"gptq: gptqmodel saved pickles {pickles}; lmforge writes none")
        reloaded = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu", use_safetensors=True)
        quantized = sum(hasattr(m, "qweight") for m in reloaded.modules())
        if quantized == 0:
            raise DependencyError("gptq: the reloaded model has no GPTQ layers")
        checks = _logits_versus_float(source, reloaded)
    return {"quantized_layers": quantized, "group_size": group, "calibration_examples": len(examples), **checks}


def _logits_versus_float(source: Path, reloaded: Any) -> dict[str, float]:
    """The largest logit difference between the float model and the quantized one reloaded from disk on a probe
    of the first 16 token ids, beside the float logits' scale: a broken save or a layer left in garbage shows
    as a difference on that scale."""
    import torch
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    probe = torch.arange(min(16, original.config.vocab_size))[None]
    with torch.inference_mode():
        reference, after = original(probe).logits, reloaded(probe).logits
    return {
        "max_logit_difference_vs_float": float((reference - after).abs().max()),
        "logit_scale": float(reference.abs().max()),
    }
