"""Inspect time against checkpoint size, 1 MB … 100 GB: flat, because only headers are read.

For each size it builds, in a temporary folder, a Llama-shaped model as sparse files (a valid
header, then `truncate` to the full length: the data region takes no disk space):
  - an HF folder (config.json + BF16 safetensors shards of at most 5 GB + model.safetensors.index.json)
  - a single F16 GGUF file written by gguf.GGUFWriter (header only, then truncated)
and times `lmforge.files.inspect.inspect_path` on each, beside the reference readers in the same run
(safetensors.safe_open over every shard; gguf.GGUFReader). Everything is deleted afterwards.

    .venv/bin/python benchmarks/inspect_scaling.py [--max-gb 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import tempfile
import time
from pathlib import Path

LAYERS = 32
SHARD_BYTES = 5 * 10**9
VOCAB = 32000


def _layer_shapes(hidden: int) -> dict[str, tuple[int, ...]]:
    ffn = hidden * 8 // 3
    return {
        "self_attn.q_proj.weight": (hidden, hidden),
        "self_attn.k_proj.weight": (hidden, hidden),
        "self_attn.v_proj.weight": (hidden, hidden),
        "self_attn.o_proj.weight": (hidden, hidden),
        "mlp.gate_proj.weight": (ffn, hidden),
        "mlp.up_proj.weight": (ffn, hidden),
        "mlp.down_proj.weight": (hidden, ffn),
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
    }


def _hidden_for(total_bytes: int) -> int:
    # bytes ≈ 2 (bf16) × (2·vocab·h + layers·12·h²): solve the quadratic for h
    a, b = 2 * LAYERS * 12, 2 * 2 * VOCAB
    return max(8, int((-b + math.sqrt(b * b + 4 * a * total_bytes)) / (2 * a)) // 8 * 8)


def model_tensors(total_bytes: int) -> tuple[int, dict[str, tuple[int, ...]]]:
    hidden = _hidden_for(total_bytes)
    tensors: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, hidden)}
    for layer in range(LAYERS):
        for name, shape in _layer_shapes(hidden).items():
            tensors[f"model.layers.{layer}.{name}"] = shape
    tensors["model.norm.weight"] = (hidden,)
    tensors["lm_head.weight"] = (VOCAB, hidden)
    return hidden, tensors


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def write_sparse_safetensors_folder(folder: Path, total_bytes: int) -> int:
    hidden, tensors = model_tensors(total_bytes)
    shards: list[dict[str, tuple[int, ...]]] = [{}]
    used = 0
    for name, shape in tensors.items():
        size = 2 * _numel(shape)
        if shards[-1] and used + size > SHARD_BYTES:
            shards.append({})
            used = 0
        shards[-1][name] = shape
        used += size
    weight_map = {}
    for index, shard in enumerate(shards, start=1):
        shard_name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {}, 0
        for name, shape in shard.items():
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + 2 * _numel(shape)]}
            offset += 2 * _numel(shape)
            weight_map[name] = shard_name
        header_bytes = json.dumps(header).encode()
        path = folder / shard_name
        with path.open("wb") as handle:
            handle.write(struct.pack("<Q", len(header_bytes)) + header_bytes)
            handle.truncate(8 + len(header_bytes) + offset)  # sparse: the data is never written
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "num_hidden_layers": LAYERS, "num_attention_heads": max(1, hidden // 64), "vocab_size": VOCAB}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return len(shards)


def write_sparse_gguf(path: Path, total_bytes: int) -> None:
    import gguf
    import numpy as np

    _, tensors = model_tensors(total_bytes)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])  # a realistic vocabulary array to skip
    data_bytes = 0
    for name, shape in tensors.items():
        nbytes = 2 * _numel(shape)
        writer.add_tensor_info(name, shape, np.dtype(np.float16), nbytes)
        data_bytes += -(-nbytes // 32) * 32
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header_end = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(-(-header_end // 32) * 32 + data_bytes)


def _best_seconds(function, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _reference_safetensors(folder: Path) -> None:
    from safetensors import safe_open

    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="numpy") as handle:
            for key in handle:
                handle.get_slice(key).get_shape()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-gb", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import gguf

    from lmforge.files.inspect import inspect_path

    sizes = [size for size in (10**6, 10**7, 10**8, 10**9, 10**10, 10**11) if size <= args.max_gb * 1e9]
    print(f"{'size':>8} | {'shards':>6} {'tensors':>7} {'params':>16} {'disk used':>10} | "
          f"{'lmforge ST':>11} {'safe_open':>10} | {'lmforge GGUF':>12} {'GGUFReader':>10}")  # fmt: skip
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix="lmforge-inspect-bench-"))
        try:
            folder = work / "model"
            folder.mkdir()
            shards = write_sparse_safetensors_folder(folder, size)
            gguf_path = work / "model.gguf"
            write_sparse_gguf(gguf_path, size)
            report = inspect_path(folder)
            assert inspect_path(gguf_path).total_params == report.total_params
            disk = sum(p.stat().st_blocks * 512 for p in work.rglob("*") if p.is_file())
            ours_st = _best_seconds(lambda: inspect_path(folder), args.repeats)
            ref_st = _best_seconds(lambda: _reference_safetensors(folder), args.repeats)
            ours_gguf = _best_seconds(lambda: inspect_path(gguf_path), args.repeats)
            ref_gguf = _best_seconds(lambda: gguf.GGUFReader(gguf_path), args.repeats)
            label = (
                f"{report.total_size_bytes / 1e9:,.3f} GB"
                if size >= 10**9
                else f"{report.total_size_bytes / 1e6:,.0f} MB"
            )
            print(f"{label:>8} | {shards:>6} {report.tensor_count:>7} {report.total_params:>16,} {disk / 1e6:>8.1f}MB | "
                  f"{ours_st * 1e3:>9.1f}ms {ref_st * 1e3:>8.1f}ms | {ours_gguf * 1e3:>10.1f}ms {ref_gguf * 1e3:>8.1f}ms",
                  flush=True)  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
