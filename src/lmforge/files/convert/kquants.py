"""GGUF K-quants (Q4_K, Q5_K, Q6_K) and llama.cpp's Q4_K_M / Q5_K_M / Q6_K tensor mixes, in numpy.

gguf-py dequantizes K-quants but cannot write them. This follows ggml's reference quantizers
(ggml-quants.c quantize_row_q4_K_ref / q5_K_ref / q6_K_ref with make_qkx2_quants and
make_qx_quants, the path llama.cpp's `llama-quantize` takes without an importance matrix), vectorised
over all blocks of a tensor at once, and the per-tensor type choice of llama-quant.cpp
(llama_tensor_get_type): in Q4_K_M and Q5_K_M, attn_v and ffn_down of the first and last eighth of
the layers and every third layer between get Q6_K; the output matrix (or the tied token embedding)
gets Q6_K; a row that is not a whole number of 256-value super-blocks falls back to Q5_0 / Q5_1 /
Q8_0, then f16. Values are computed in float32 as ggml does; results are proven by llama.cpp
itself (tests/files/test_llama_cpp_parity.py).
"""

from __future__ import annotations

import re
from typing import Any

QK_K = 256  # values per super-block (ggml-common.h)
_GROUP_MAX_EPS = 1e-15  # ggml-quants.c: a group whose absmax is below this is all zeros
_CHUNK_BLOCKS = 16384  # super-blocks quantized at once: bounds the temporaries to ~100 MB


def _rint(values: Any) -> Any:
    """ggml's nearest_int: round half to even (the 1.5·2^23 trick), as np.rint does."""
    import numpy as np

    return np.rint(values)


def _qkx2(x: Any, weights: Any, nmax: int, rmin: float, rdelta: float, nstep: int) -> tuple[Any, Any, Any]:
    """make_qkx2_quants for rows of x (one row per 32-value sub-block): the scale, the (positive) min
    and levels 0..nmax minimising the weighted squared error over nstep+1 candidate scales."""
    import numpy as np

    f32 = np.float32
    low = np.minimum(x.min(axis=1), 0).astype(f32)
    high = x.max(axis=1)
    sum_w = weights.sum(axis=1, dtype=f32)
    sum_x = (weights * x).sum(axis=1, dtype=f32)
    span = high - low
    flat = span == 0
    safe_span = np.where(flat, f32(1), span)
    iscale = f32(nmax) / safe_span
    scale = (f32(1) / iscale).astype(f32)
    levels = np.clip(_rint(iscale[:, None] * (x - low[:, None])), 0, nmax).astype(f32)
    best = (weights * (scale[:, None] * levels + low[:, None] - x) ** 2).sum(axis=1, dtype=f32)
    for step in range(nstep + 1):
        iscale = f32(rmin + rdelta * step + nmax) / safe_span
        trial = np.clip(_rint(iscale[:, None] * (x - low[:, None])), 0, nmax).astype(f32)
        sum_l = (weights * trial).sum(axis=1, dtype=f32)
        sum_l2 = (weights * trial * trial).sum(axis=1, dtype=f32)
        sum_xl = (weights * trial * x).sum(axis=1, dtype=f32)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe_det = np.where(ok, det, f32(1))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe_det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
        positive = this_min > 0
        this_min = np.where(positive, f32(0), this_min)
        this_scale = np.where(positive, sum_xl / np.where(sum_l2 > 0, sum_l2, f32(1)), this_scale)
        error = (weights * (this_scale[:, None] * trial + this_min[:, None] - x) ** 2).sum(axis=1, dtype=f32)
        better = ok & (error < best) & ~flat
        levels = np.where(better[:, None], trial, levels)
        best = np.where(better, error, best)
        scale = np.where(better, this_scale, scale).astype(f32)
        low = np.where(better, this_min, low).astype(f32)
    levels = np.where(flat[:, None], f32(0), levels)
    scale = np.where(flat, f32(0), scale)
    return scale, -low, levels


def _qx(x: Any, nmax: int) -> tuple[Any, Any]:
    """make_qx_quants with rmse_type 1 (weights x²) for rows of 16 values: the signed scale and
    levels 0..2·nmax-1 (level - nmax is the quantized value), best of 19 candidate scales."""
    import numpy as np

    f32 = np.float32
    rows = np.arange(x.shape[0])
    signed_max = x[rows, np.abs(x).argmax(axis=1)]
    zero = np.abs(signed_max) < _GROUP_MAX_EPS
    safe_max = np.where(zero, f32(1), signed_max)
    weights = x * x

    def trial(iscale: Any) -> tuple[Any, Any, Any]:
        levels = np.clip(_rint(iscale[:, None] * x), -nmax, nmax - 1).astype(f32)
        return levels, (weights * x * levels).sum(axis=1, dtype=f32), (weights * levels * levels).sum(axis=1, dtype=f32)

    levels, sumlx, suml2 = trial(f32(-nmax) / safe_max)
    scale = np.where(suml2 > 0, sumlx / np.where(suml2 > 0, suml2, f32(1)), f32(0)).astype(f32)
    best = scale * sumlx
    for step in (*range(-9, 0), *range(1, 10)):
        candidate, sumlx, suml2 = trial(-(f32(nmax) + f32(0.1) * f32(step)) / safe_max)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        safe_l2 = np.where(suml2 > 0, suml2, f32(1))
        levels = np.where(better[:, None], candidate, levels)
        scale = np.where(better, sumlx / safe_l2, scale).astype(f32)
        best = np.where(better, scale * sumlx, best)
    return np.where(zero, f32(0), scale), np.where(zero[:, None], f32(0), levels + nmax)


def _fp16(values: Any) -> Any:
    import numpy as np

    return values.astype(np.float16)


def _pack_scales_mins(ls: Any, lm: Any) -> Any:
    """The 12-byte 6-bit scale/min layout of Q4_K/Q5_K (inverse of get_scale_min_k4)."""
    import numpy as np

    packed = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    packed[:, 0:4] = ls[:, 0:4]
    packed[:, 4:8] = lm[:, 0:4]
    packed[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    packed[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    packed[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return packed


def _scale_min_blocks(blocks: Any, nmax: int, rmin: float, rdelta: float, nstep: int) -> tuple[Any, ...]:
    """Shared first half of Q4_K/Q5_K: per 32-value sub-block scale/min, 6-bit codes, fp16 super-scales,
    then the levels requantized against the stored (rounded) scales, as quantize_row_q4_K_ref does."""
    import numpy as np

    f32 = np.float32
    count = blocks.shape[0]
    sub = blocks.reshape(count * 8, 32)
    av_x = np.sqrt((sub * sub).sum(axis=1, dtype=f32) / f32(32))
    weights = av_x[:, None] + np.abs(sub)
    scales, mins, levels = _qkx2(sub, weights, nmax, rmin, rdelta, nstep)
    scales, mins, levels = scales.reshape(count, 8), mins.reshape(count, 8), levels.reshape(count, 8, 32)
    max_scale = np.maximum(scales.max(axis=1), 0)
    max_min = np.maximum(mins.max(axis=1), 0)
    inv_scale = np.where(max_scale > 0, f32(63) / np.where(max_scale > 0, max_scale, f32(1)), f32(0))
    inv_min = np.where(max_min > 0, f32(63) / np.where(max_min > 0, max_min, f32(1)), f32(0))
    ls = np.clip(_rint(inv_scale[:, None] * scales), 0, 63).astype(np.uint8)
    lm = np.clip(_rint(inv_min[:, None] * mins), 0, 63).astype(np.uint8)
    d = _fp16(max_scale / f32(63))
    dmin = _fp16(max_min / f32(63))
    sub_d = d.astype(f32)[:, None] * ls.astype(f32)
    sub_m = dmin.astype(f32)[:, None] * lm.astype(f32)
    nonzero = sub_d != 0
    requantized = np.clip(
        _rint((blocks.reshape(count, 8, 32) + sub_m[:, :, None]) / np.where(nonzero, sub_d, f32(1))[:, :, None]),
        0,
        nmax,
    )
    levels = np.where(nonzero[:, :, None], requantized, levels).astype(np.uint8).reshape(count, QK_K)
    return d, dmin, _pack_scales_mins(ls, lm), levels


def quantize_q4_k(blocks: Any) -> Any:
    """(n, 256) float32 → (n, 144) uint8 block_q4_K: d, dmin, scales[12], qs[128]."""
    import numpy as np

    d, dmin, scales, levels = _scale_min_blocks(blocks, 15, -1.0, 0.1, 20)
    chunks = levels.reshape(-1, 4, 2, 32)  # 64-value chunks: low nibble = first 32, high = next 32
    qs = (chunks[:, :, 0, :] | (chunks[:, :, 1, :] << 4)).reshape(-1, 128)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), scales, qs], axis=1)


def quantize_q5_k(blocks: Any) -> Any:
    """(n, 256) float32 → (n, 176) uint8 block_q5_K: d, dmin, scales[12], qh[32], qs[128]."""
    import numpy as np

    d, dmin, scales, levels = _scale_min_blocks(blocks, 31, -0.5, 0.1, 15)
    chunks = levels.reshape(-1, 4, 2, 32)
    low = chunks & 0xF
    high = (chunks >> 4).astype(np.uint8)  # the fifth bit of each level
    qs = (low[:, :, 0, :] | (low[:, :, 1, :] << 4)).reshape(-1, 128)
    shifts = (2 * np.arange(4, dtype=np.uint8))[None, :, None]
    qh = ((high[:, :, 0, :] << shifts) | (high[:, :, 1, :] << (shifts + 1))).astype(np.uint8)
    qh = np.bitwise_or.reduce(qh, axis=1)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), scales, qh, qs], axis=1)


def quantize_q6_k(blocks: Any) -> Any:
    """(n, 256) float32 → (n, 210) uint8 block_q6_K: ql[128], qh[64], scales[16] (int8), d."""
    import numpy as np

    f32 = np.float32
    count = blocks.shape[0]
    scales, levels = _qx(blocks.reshape(count * 16, 16), 32)
    scales, levels = scales.reshape(count, 16), levels.reshape(count, 16, 16)
    rows = np.arange(count)
    max_scale = scales[rows, np.abs(scales).argmax(axis=1)]
    zero = np.abs(max_scale) < _GROUP_MAX_EPS
    iscale = f32(-128) / np.where(zero, f32(1), max_scale)
    d = _fp16(np.where(zero, f32(0), f32(1) / iscale))
    codes = np.where(zero[:, None], 0, np.minimum(127, _rint(iscale[:, None] * scales))).astype(np.int8)
    sub_d = d.astype(f32)[:, None] * codes.astype(f32)
    nonzero = sub_d != 0
    requantized = np.clip(_rint(blocks.reshape(count, 16, 16) / np.where(nonzero, sub_d, f32(1))[:, :, None]), -32, 31)
    levels = np.where(nonzero[:, :, None], requantized + 32, levels)
    levels = np.where(zero[:, None, None], 0, levels).astype(np.uint8).reshape(count, 2, 4, 32)  # 128-halves
    low = levels & 0xF
    ql = np.concatenate(
        [low[:, :, 0, :] | (low[:, :, 2, :] << 4), low[:, :, 1, :] | (low[:, :, 3, :] << 4)], axis=2
    ).reshape(count, 128)
    high = levels >> 4
    qh = high[:, :, 0, :] | (high[:, :, 1, :] << 2) | (high[:, :, 2, :] << 4) | (high[:, :, 3, :] << 6)
    return np.concatenate([ql, qh.reshape(count, 64), codes.view(np.uint8), d.view(np.uint8).reshape(-1, 2)], axis=1)


_QUANTIZERS = {"Q4_K": quantize_q4_k, "Q5_K": quantize_q5_k, "Q6_K": quantize_q6_k}


def quantize_k(data: Any, qtype: Any) -> Any:
    """A float32 array whose last axis is a multiple of 256 → the uint8 array GGUFWriter.add_tensor
    takes for K-quant `qtype` (the last axis becomes bytes per row)."""
    import numpy as np

    quantize = _QUANTIZERS[qtype.name]
    rows = np.ascontiguousarray(data, dtype=np.float32).reshape(-1, QK_K)
    parts = [quantize(rows[start : start + _CHUNK_BLOCKS]) for start in range(0, rows.shape[0], _CHUNK_BLOCKS)]
    encoded = np.concatenate(parts, axis=0)
    return encoded.reshape(*data.shape[:-1], data.shape[-1] // QK_K * encoded.shape[1])


# --- llama.cpp's per-tensor choice (llama-quant.cpp llama_tensor_get_type) --------------------------

# file type → its base type; the _M mixes raise some tensors to Q6_K.
MIXES = {"q4_k_m": "Q4_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}
# A K-type whose row is not whole 256-value super-blocks falls back to these (then f16).
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
_LAYER = re.compile(r"^blk\.(\d+)\.")


def _use_more_bits(layer: int, layers: int) -> bool:
    """llama-quant.cpp use_more_bits: the first and last eighth of the layers and every third between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def k_mix_type(name: str, shape: tuple[int, ...], mix: str, layers: int, has_output: bool) -> Any:
    """The GGMLQuantizationType llama.cpp's quantizer gives a 2-D tensor `name` (GGUF name, shape in
    numpy order: rows, row length) in file type `mix` (q4_k_m, q5_k_m, q6_k)."""
    import gguf

    q = gguf.GGMLQuantizationType
    base = MIXES[mix]
    chosen = base
    row = shape[-1]
    layer_match = _LAYER.match(name)
    layer = int(layer_match.group(1)) if layer_match else 0
    if name == "output.weight" or (not has_output and name == "token_embd.weight"):
        chosen = "Q8_0" if row % QK_K else "Q6_K"
    elif (
        mix in ("q4_k_m", "q5_k_m")
        and ("attn_v.weight" in name or "ffn_down" in name)
        and _use_more_bits(layer, layers)
    ):
        chosen = "Q6_K"
    elif mix == "q4_k_m" and "attn_qkv.weight" in name:
        chosen = "Q5_K"
    elif mix == "q5_k_m" and "attn_qkv.weight" in name:
        chosen = "Q6_K"
    if chosen in _FALLBACK and row % QK_K:
        chosen = _FALLBACK[chosen]
        block, _ = gguf.GGML_QUANT_SIZES[getattr(q, chosen)]
        if row % block:
            chosen = "F16"
    return getattr(q, chosen)
