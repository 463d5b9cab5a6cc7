"""The quality report: every figure beside the original's, measured in one run; md, json and plot."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.compress import compare, prune, quantize, write_quality_report
from lmforge.errors import UserInputError

OPTIONS = {"limit": 3, "decode_tokens": 4, "runs": 3}


def test_report_sets_a_smaller_model_beside_the_original(tmp_path, tiny_llama_dir):
    prune(tiny_llama_dir, tmp_path / "narrow", sparsity=0.5, method="magnitude", structure="mlp")
    report = compare(tiny_llama_dir, [(str(tmp_path / "narrow"), "prune-mlp-0.5")], **OPTIONS)
    original, narrow = report.original, report.compressed[0]
    assert original.method == "original" and narrow.method == "prune-mlp-0.5"
    assert narrow.size_bytes < original.size_bytes and narrow.params < original.params
    assert narrow.load_bytes < original.load_bytes
    for row in (original, narrow):
        assert len(row.decode_runs) == 3 and row.decode_tokens_per_second > 0
        assert row.perplexity > 1 and 0 <= row.exact_match <= 1 and row.runtime == "transformers"
    paths = write_quality_report(report, tmp_path / "report")
    table = paths["markdown"].read_text()
    assert "| tiny-llama" in table.replace("tiny-llama0", "tiny-llama") and "prune-mlp-0.5" in table and "×" in table
    assert json.loads(paths["json"].read_text())["compressed"][0]["params"] == narrow.params
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gguf_results_are_timed_in_llama_cpp_beside_the_original_in_llama_cpp(tmp_path, tiny_llama_dir, llama_cpp):
    quantize(tiny_llama_dir, tmp_path / "q8.gguf", method="gguf-q8_0")
    report = compare(tiny_llama_dir, [(str(tmp_path / "q8.gguf"), "gguf-q8_0")], **OPTIONS)
    gguf_row, baseline = report.compressed[0], report.original_llama_cpp
    assert gguf_row.runtime == baseline.runtime == "llama.cpp" and baseline.method == "original (gguf-f32)"
    assert gguf_row.size_bytes < baseline.size_bytes and gguf_row.load_bytes == gguf_row.size_bytes
    assert gguf_row.params == report.original.params  # every weight is in the file
    assert gguf_row.perplexity == pytest.approx(report.original.perplexity, rel=0.02)  # q8_0: within 2%


def test_fewer_than_three_speed_runs_are_refused(tiny_llama_dir):
    with pytest.raises(UserInputError, match="at least 3"):
        compare(tiny_llama_dir, [], limit=2, runs=2)


def test_load_memory_counts_what_a_torchao_weight_holds_not_its_float_shape(tiny_llama_dir):
    from lmforge.compress.report import loaded_bytes
    from lmforge.generate.load import load_model

    original = load_model(str(tiny_llama_dir)).model
    quantized = load_model(str(tiny_llama_dir), quant="int4").model
    assert loaded_bytes(original) == original.get_memory_footprint()
    # the decoder's linears go from 4 bytes a weight to 1 (int4 kept in int8) plus an f32 scale and an int8 zero
    # point per group of 32; get_memory_footprint would still count 4 bytes a weight
    linear = sum(
        m.weight.nelement() for n, m in original.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n
    )
    assert loaded_bytes(quantized) == original.get_memory_footprint() - 4 * linear + linear + linear // 32 * 5
