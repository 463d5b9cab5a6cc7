"""K-quants written by lmforge, read back by gguf-py's dequantizer (ggml's layout) within ggml's error."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from lmforge.files.convert.kquants import k_mix_type, quantize_k
from lmforge.files.convert.to_gguf import error_bound

Q = gguf.GGMLQuantizationType


def _round_trip(values: np.ndarray, qtype) -> np.ndarray:
    encoded = quantize_k(values, qtype)
    assert encoded.dtype == np.uint8 and encoded.shape == (
        *values.shape[:-1],
        values.shape[-1] // 256 * gguf.GGML_QUANT_SIZES[qtype][1],
    )
    return gguf.quants.dequantize(encoded, qtype).reshape(values.shape)


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q5_K, Q.Q6_K])
@pytest.mark.parametrize("distribution", ["normal", "heavy-tailed", "sparse"])
def test_k_quants_round_trip_within_ggml_bound_and_more_bits_mean_less_error(qtype, distribution):
    rng = np.random.default_rng(0)
    values = {
        "normal": rng.standard_normal((32, 512)),
        "heavy-tailed": rng.standard_t(2, (32, 512)),
        "sparse": rng.standard_normal((32, 512)) * (rng.random((32, 512)) < 0.05),
    }[distribution].astype(np.float32)
    error = np.abs(_round_trip(values, qtype) - values)
    assert (error <= error_bound(values, qtype)).all()
    relative = np.sqrt((error**2).mean() / (values**2).mean())
    assert relative < {Q.Q4_K: 0.15, Q.Q5_K: 0.08, Q.Q6_K: 0.04}[qtype]  # measured: up to 0.12, 0.06, 0.03


def test_k_quants_beat_q4_0_at_four_bits_and_keep_zero_blocks_zero():
    rng = np.random.default_rng(1)
    values = (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)
    values[5] = 0.0
    q4_k = _round_trip(values, Q.Q4_K)
    q4_0 = gguf.quants.dequantize(gguf.quants.quantize(values, Q.Q4_0), Q.Q4_0).reshape(values.shape)
    assert np.abs(q4_k - values).mean() < np.abs(q4_0 - values).mean()
    for qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        assert not _round_trip(values, qtype)[5].any()


def test_rows_that_are_not_whole_super_blocks_fall_back_as_llama_cpp_does():
    assert k_mix_type("blk.0.ffn_up.weight", (128, 64), "q4_k_m", 2, True) == Q.Q5_0
    assert k_mix_type("blk.0.ffn_up.weight", (128, 64), "q5_k_m", 2, True) == Q.Q5_1
    assert k_mix_type("blk.0.ffn_up.weight", (128, 64), "q6_k", 2, True) == Q.Q8_0
    assert k_mix_type("blk.0.ffn_up.weight", (128, 48), "q4_k_m", 2, True) == Q.F16  # not even 32-blocks
    assert k_mix_type("token_embd.weight", (500, 64), "q4_k_m", 2, False) == Q.Q8_0  # tied output, short rows
    assert k_mix_type("token_embd.weight", (500, 256), "q4_k_m", 2, False) == Q.Q6_K


def test_q4_k_m_raises_attn_v_and_ffn_down_in_the_layers_llama_cpp_picks():
    # use_more_bits for 16 layers: i < 2, i >= 14, or (i - 2) % 3 == 2 → 0 1 4 7 10 13 14 15
    picked = [
        layer
        for layer in range(16)
        if k_mix_type(f"blk.{layer}.attn_v.weight", (256, 256), "q4_k_m", 16, True) == Q.Q6_K
    ]
    assert picked == [0, 1, 4, 7, 10, 13, 14, 15]
    assert k_mix_type("blk.4.ffn_down.weight", (256, 512), "q5_k_m", 16, True) == Q.Q6_K
    assert k_mix_type("blk.5.ffn_down.weight", (256, 512), "q5_k_m", 16, True) == Q.Q5_K
    assert k_mix_type("blk.4.attn_q.weight", (256, 256), "q4_k_m", 16, True) == Q.Q4_K
