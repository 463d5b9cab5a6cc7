"""Bits per weight of every storage format the planner knows, from how each format really lays out its blocks.

A quantized weight costs more than its nominal bits: every block of weights carries scales (and
sometimes minimums) too. The figures below count those, so "4-bit" is 4.125 or 4.5 bits, not 4.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.errors import UserInputError


@dataclass(frozen=True)
class WeightFormat:
    name: str
    bits_per_weight: float
    quantizes_embeddings: bool  # False: embeddings and the LM head stay in 16-bit (bitsandbytes, GPTQ/AWQ)
    how: str  # where the figure comes from


def _nf4_bits(double_quant: bool) -> float:
    # bitsandbytes NF4: 4-bit codes, one absmax per block of 64 weights (fp32 = 32/64 = 0.5 bit/weight);
    # double quantization stores that absmax in 8 bits with one fp32 constant per 256 blocks (Dettmers et al. 2023, QLoRA §3).
    if double_quant:
        return 4 + 8 / 64 + 32 / (64 * 256)
    return 4 + 32 / 64


FORMATS: dict[str, WeightFormat] = {
    f.name: f
    for f in (
        WeightFormat("fp32", 32.0, True, "IEEE float32"),
        WeightFormat("fp16", 16.0, True, "IEEE float16"),
        WeightFormat("bf16", 16.0, True, "bfloat16"),
        # FP8 (E4M3) with one fp32 scale per tensor: the scale is negligible.
        WeightFormat("fp8", 8.0, False, "FP8 E4M3, per-tensor scale"),
        # LLM.int8 / per-channel int8: one fp16 scale per output row, negligible against the row.
        WeightFormat("int8", 8.0, False, "int8 per-channel (bitsandbytes LLM.int8, GPTQ 8-bit)"),
        # GPTQ/AWQ 4-bit, group size 128: one fp16 scale per group (16/128) + a packed 4-bit zero (4/128).
        WeightFormat("int4", 4 + 16 / 128 + 4 / 128, False, "int4 group 128 with fp16 scale and 4-bit zero (GPTQ/AWQ)"),
        WeightFormat("nf4", _nf4_bits(True), False, "bitsandbytes NF4, block 64, double quantization"),
        # torchao weight-only (lmforge compress quantize --method torchao-*, --quant int4 on load): int8 with one
        # scale per output row; the CPU-runnable int4 (IntxUnpackedToInt8Tensor) keeps each 4-bit value in a byte,
        # plus a scale and zero point per group of 32 (5 bytes), so it costs more than int8.
        WeightFormat("torchao-int8", 8.0, False, "torchao Int8WeightOnly: int8, per-row scale"),
        WeightFormat("torchao-int4", 8 + 5 * 8 / 32, False, "torchao IntxWeightOnly int4, group 32, unpacked in int8"),
        # GGUF block layouts from ggml-common.h: Q8_0 = 32 int8 + fp16 scale = 34 bytes / 32 weights.
        WeightFormat("Q8_0", 34 * 8 / 32, True, "ggml block_q8_0: 34 bytes per 32 weights"),
        # Q6_K super-block: 256 weights in 210 bytes (ql 128 + qh 64 + 16 int8 scales + fp16 d).
        WeightFormat("Q6_K", 210 * 8 / 256, True, "ggml block_q6_K: 210 bytes per 256 weights"),
        # Q4_0: 32 4-bit weights + fp16 scale = 18 bytes / 32 weights.
        WeightFormat("Q4_0", 18 * 8 / 32, True, "ggml block_q4_0: 18 bytes per 32 weights"),
        # The _M mixes keep some tensors (attn_v, ffn_down, output) at a higher type. Effective bpw from the
        # file sizes llama.cpp's `quantize` lists for LLaMA-v1-7B (6.74e9 weights): 4.45 / 3.80 / 3.07 GiB.
        WeightFormat("Q5_K_M", 5.67, True, "llama.cpp mix: 4.45 GiB for LLaMA-7B"),
        WeightFormat("Q4_K_M", 4.84, True, "llama.cpp mix: 3.80 GiB for LLaMA-7B"),
        WeightFormat("Q3_K_M", 3.91, True, "llama.cpp mix: 3.07 GiB for LLaMA-7B"),
        # Q2_K blocks are 84 bytes / 256 weights = 2.625 bpw; llama.cpp's Q2_K file keeps some tensors
        # at Q3_K/Q4_K, so real files run larger (2.63 GiB = 3.35 bpw for LLaMA-7B): this is a lower bound.
        WeightFormat("Q2_K", 84 * 8 / 256, True, "ggml block_q2_K: 84 bytes per 256 weights (lower bound)"),
    )
}


def weight_format(name: str) -> WeightFormat:
    """Look up a format by name; GGUF names match case-insensitively ("q4_k_m")."""
    by_lower = {key.lower(): value for key, value in FORMATS.items()}
    found = by_lower.get(name.lower()) if isinstance(name, str) else None
    if found is None:
        raise UserInputError(f"weight format {name!r} is unknown; choose one of: {', '.join(FORMATS)}")
    return found


def bits_per_weight(name: str) -> float:
    return weight_format(name).bits_per_weight


def weight_bytes(params: int, name: str) -> int:
    """Bytes to store `params` weights in format `name`, scales included (rounded up to whole bytes)."""
    return -(-int(params * bits_per_weight(name)) // 8)


def nf4_bits_per_weight(double_quant: bool) -> float:
    """NF4 storage cost, with or without QLoRA's double quantization of the block absmax."""
    return _nf4_bits(double_quant)
