"""Read what a model's name says: family, size, active parameters, experts, variant, release, quant.

Hub names follow a loose convention (https://huggingface.co/Qwen/Qwen3-235B-A22B-Instruct-2507 = 235B
total, 22B active per token, instruction-tuned, released 2025-07). Tokens are split on '-' (and a trailing
'.QUANT' of GGUF file names); the family is everything before the first token that says size,
variant or quantisation, so "Llama-3.1", "gemma-2" and "DeepSeek-V3" stay whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SCALE = {"m": 10**6, "b": 10**9, "t": 10**12}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([mbt])$", re.IGNORECASE)
_ACTIVE = re.compile(r"^a(\d+(?:\.\d+)?)([mb])$", re.IGNORECASE)
_EXPERTS = re.compile(r"^(\d+)x(\d+(?:\.\d+)?)([mbt])$", re.IGNORECASE)
_CONTEXT = re.compile(r"^(\d+)k$", re.IGNORECASE)
_VERSION = re.compile(r"^v\d+(?:\.\d+)*$", re.IGNORECASE)
_RELEASE = re.compile(r"^\d{4}$")  # YYMM (2507) or MMDD (0613) release stamps
_GGUF_QUANT = re.compile(r"^(?:I?Q\d(?:_[A-Z0-9]+)*|TQ\d_\d|MXFP4|F16|F32|BF16|FP16|FP32)$", re.IGNORECASE)
_QUANT_WORDS = {"awq", "gptq", "gguf", "exl2", "bnb", "mlx", "fp8", "int4", "int8", "w4a16", "w8a8", "nf4", "hqq"}
_QUANT_BITS = re.compile(r"^\d+(?:\.\d+)?-?(?:bit|bpw)$", re.IGNORECASE)
_VARIANTS = {"instruct", "chat", "it", "base", "thinking", "reasoning", "preview", "sft", "dpo", "rlhf"}
_FORMATS = {"hf", "safetensors", "gguf", "onnx", "pt", "bin"}
_EXTENSIONS = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".ckpt", ".npz")


@dataclass(frozen=True)
class ModelName:
    """What a model name says. Sizes are parameter counts; None where the name is silent."""

    name: str  # as given
    organization: str | None  # "meta-llama" in "meta-llama/Llama-2-70b-chat-hf"
    family: str  # "Qwen3", "Llama-3.1", "DeepSeek-V3"
    total_params: int | None = None  # 235B in Qwen3-235B-A22B; None for "8x7B" (experts share attention)
    active_params: int | None = None  # 22B in "A22B": parameters used per token by a mixture of experts
    num_experts: int | None = None  # 8 in "Mixtral-8x7B"
    params_per_expert: int | None = None  # 7B in "Mixtral-8x7B"
    variant: str | None = None  # "Instruct", "chat", "it", "base"
    version: str | None = None  # "v0.1"
    release: str | None = None  # "2507"
    context_tokens: int | None = None  # 131072 for "128k"
    quantization: str | None = None  # "Q4_K_M", "AWQ", "GPTQ-4bit"
    file_format: str | None = None  # "gguf" from the extension, "hf" from a "-hf" suffix
    extra: list[str] = field(default_factory=list)  # tokens after the family that say nothing above

    @property
    def is_moe(self) -> bool:
        return self.active_params is not None or self.num_experts is not None


def _params(number: str, unit: str) -> int:
    return round(float(number) * _SCALE[unit.lower()])


def _is_quant(token: str) -> bool:
    return bool(_GGUF_QUANT.match(token)) or token.lower() in _QUANT_WORDS or bool(_QUANT_BITS.match(token))


def _ends_family(token: str) -> bool:
    return (
        bool(_SIZE.match(token) or _ACTIVE.match(token) or _EXPERTS.match(token) or _CONTEXT.match(token))
        or token.lower() in _VARIANTS
        or _is_quant(token)
        or token.lower() in _FORMATS
    )


def parse_model_name(name: str) -> ModelName:
    """Parse a hub id, folder or file name such as "Llama-3.1-8B-Instruct-Q4_K_M.gguf"."""
    text = name.strip().rstrip("/")
    organization = None
    if "/" in text:
        parts = text.split("/")
        organization, text = (parts[-2] or None), parts[-1]
    file_format = None
    for extension in _EXTENSIONS:
        if text.lower().endswith(extension):
            file_format, text = extension[1:], text[: -len(extension)]
            break
    tokens = [t for t in text.split("-") if t]
    # GGUF files often end in ".Q4_K_M": split that off the last token.
    if tokens and "." in tokens[-1]:
        head, _, tail = tokens[-1].rpartition(".")
        if _is_quant(tail) and head:
            tokens[-1:] = [head, tail]
    family_end = next((i for i, t in enumerate(tokens) if i > 0 and _ends_family(t)), len(tokens))
    fields: dict[str, object] = {}
    quant_parts: list[str] = []
    extra: list[str] = []
    for token in tokens[family_end:]:
        lower = token.lower()
        if match := _EXPERTS.match(token):
            fields["num_experts"] = int(match.group(1))
            fields["params_per_expert"] = _params(match.group(2), match.group(3))
        elif match := _SIZE.match(token):
            fields.setdefault("total_params", _params(*match.groups()))
        elif match := _ACTIVE.match(token):
            fields["active_params"] = _params(*match.groups())
        elif match := _CONTEXT.match(token):
            fields["context_tokens"] = int(match.group(1)) * 1024
        elif lower in _VARIANTS and "variant" not in fields:
            fields["variant"] = token
        elif _VERSION.match(token):
            fields["version"] = token
        elif _RELEASE.match(token):
            fields["release"] = token
        elif _is_quant(token) and not (lower == "gguf" and file_format):
            quant_parts.append(token)
        elif lower in _FORMATS:
            file_format = file_format or lower
        else:
            extra.append(token)
    return ModelName(
        name=name,
        organization=organization,
        family="-".join(tokens[:family_end]),
        quantization="-".join(quant_parts) or None,
        file_format=file_format,
        extra=extra,
        **fields,  # type: ignore[arg-type]
    )
