"""Bits per weight follow the real block layouts, so quantized sizes match the files users download."""

from __future__ import annotations

import pytest

from lmforge.errors import UserInputError
from lmforge.plan.quant import bits_per_weight, nf4_bits_per_weight, weight_bytes

GB = 10**9


def test_seed_weight_sizes_for_a_7b_model():
    # the tutorials: 7B in bf16 is 14 GB, int8 7 GB, int4 3.5 GB (4 bits; group scales add ~3%).
    assert weight_bytes(7 * 10**9, "bf16") == 14 * GB
    assert weight_bytes(7 * 10**9, "int8") == 7 * GB
    assert weight_bytes(7 * 10**9, "int4") == pytest.approx(3.5 * GB, rel=0.04)
    assert weight_bytes(7 * 10**9, "int4") > 3.5 * GB


@pytest.mark.parametrize(
    ("name", "bits"),
    [("Q8_0", 8.5), ("Q6_K", 6.5625), ("Q4_0", 4.5), ("Q2_K", 2.625), ("fp8", 8.0), ("fp32", 32.0)],
)
def test_ggml_block_sizes(name, bits):
    assert bits_per_weight(name) == bits


def test_k_quant_mixes_match_llama_cpp_file_sizes():
    # llama.cpp's quantize lists LLaMA-7B (6.74e9 weights) at 3.80 GiB for Q4_K_M, 4.45 GiB for Q5_K_M.
    assert weight_bytes(6_738_415_616, "q4_k_m") / 2**30 == pytest.approx(3.80, abs=0.02)
    assert weight_bytes(6_738_415_616, "Q5_K_M") / 2**30 == pytest.approx(4.45, abs=0.02)
    assert bits_per_weight("Q2_K") < bits_per_weight("Q3_K_M") < bits_per_weight("Q4_K_M") < bits_per_weight("Q5_K_M")


def test_nf4_double_quantization_saves_the_absmax_bits():
    # QLoRA §3: absmax fp32 per 64 weights = 0.5 bit; double quantization makes it 8/64 + 32/(64*256) ≈ 0.127.
    assert nf4_bits_per_weight(False) == 4.5
    assert nf4_bits_per_weight(True) == pytest.approx(4.127, abs=0.001)
    assert bits_per_weight("nf4") == nf4_bits_per_weight(True)


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(UserInputError, match="Q4_K_M"):
        bits_per_weight("q9_k")
