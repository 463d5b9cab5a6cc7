"""Quantize: bitsandbytes saved as transformers reloads it, GGUF for llama.cpp, unavailable methods say why."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.compress import quantize
from lmforge.errors import DependencyError, UserInputError
from lmforge.generate.load import load_model


def test_bnb_nf4_is_saved_so_transformers_and_lmforge_reload_it_quantized(tmp_path, tiny_llama_dir):
    result = quantize(tiny_llama_dir, tmp_path / "nf4", method="bnb-nf4")
    config = json.loads((tmp_path / "nf4" / "config.json").read_text())
    assert config["quantization_config"]["bnb_4bit_quant_type"] == "nf4"
    assert result.checks["quantized_layers"] == 14
    # NF4 (4 bits, block 64) of a random hidden-64 init: measured 0.16 of the logits' scale; garbage would be ~1
    assert result.checks["max_logit_difference_vs_float"] < 0.3 * result.checks["logit_scale"]
    assert result.size_bytes < (tiny_llama_dir / "model.safetensors").stat().st_size
    loaded = load_model(str(tmp_path / "nf4"))
    assert type(loaded.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    with torch.inference_mode():
        assert torch.isfinite(loaded.model(torch.tensor([[1, 2, 3]])).logits).all()


def test_quantize_on_load_gives_bitsandbytes_layers(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), quant="nf4")
    assert type(loaded.model.model.layers[1].self_attn.q_proj).__name__ == "Linear4bit"
    with pytest.raises(UserInputError, match="not one of int8, nf4"):
        load_model(str(tiny_llama_dir), quant="int3")
    with pytest.raises(UserInputError, match="merge first"):  # the adapter's update would be lost
        load_model(str(tiny_llama_dir), quant="nf4", adapter=str(tiny_llama_dir))


def test_gguf_methods_write_one_verified_file(tmp_path, tiny_llama_dir):
    result = quantize(tiny_llama_dir, tmp_path / "m.gguf", method="gguf-q6_k")
    assert result.checks["pre_tokenizer"] == "gpt-2" and (tmp_path / "m.gguf").stat().st_size == result.size_bytes
    with pytest.raises(UserInputError, match="give OUT a .gguf name"):
        quantize(tiny_llama_dir, tmp_path / "folder", method="gguf-q8_0")


@pytest.mark.parametrize("method", ["torchao-int8", "torchao-int4", "gptq"])
def test_methods_that_cannot_run_here_say_why(tmp_path, tiny_llama_dir, method):
    with pytest.raises(DependencyError, match="not available"):
        quantize(tiny_llama_dir, tmp_path / "out", method=method)
