"""Quantize: bitsandbytes, torchao and GPTQ saved as transformers reloads them, GGUF for llama.cpp."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from lmforge.compress import compare, quantize
from lmforge.errors import DependencyError, UserInputError
from lmforge.files.inspect import inspect_path
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


# torchao on a random hidden-64 init, measured: int8 per-row 0.7% of the logits' scale, int4 in groups of 32
# 11.5%; garbage (or weights left unquantized by a silent fallback, caught by the layer count) would differ.
@pytest.mark.parametrize(
    ("method", "bound", "weight_type", "inspected"),
    [
        ("torchao-int8", 0.05, "Int8Tensor", "Int8WeightOnlyConfig"),
        ("torchao-int4", 0.3, "IntxUnpackedToInt8Tensor", "IntxWeightOnlyConfig int4"),
    ],
)
def test_torchao_is_saved_as_safetensors_that_lmforge_reloads_quantized(
    tmp_path, tiny_llama_dir, method, bound, weight_type, inspected
):
    result = quantize(tiny_llama_dir, tmp_path / "ao", method=method)
    config = json.loads((tmp_path / "ao" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    assert not [p for p in (tmp_path / "ao").iterdir() if p.suffix in (".bin", ".pt", ".pth")]  # nothing pickled
    assert result.checks["quantized_layers"] == 14
    assert inspect_path(tmp_path / "ao").quantization == f"TORCHAO {inspected}"
    assert result.checks["max_logit_difference_vs_float"] < bound * result.checks["logit_scale"]
    loaded = load_model(str(tmp_path / "ao"))
    assert type(loaded.model.model.layers[0].mlp.up_proj.weight).__name__ == weight_type
    original = load_model(str(tiny_llama_dir))
    probe = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        difference = (loaded.model(probe).logits - original.model(probe).logits).abs().max()
    assert difference < bound * result.checks["logit_scale"]


def test_quantize_on_load_gives_bitsandbytes_or_torchao_layers(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), quant="nf4")
    assert type(loaded.model.model.layers[1].self_attn.q_proj).__name__ == "Linear4bit"
    loaded = load_model(str(tiny_llama_dir), quant="int4")
    assert type(loaded.model.model.layers[1].self_attn.q_proj.weight).__name__ == "IntxUnpackedToInt8Tensor"
    with pytest.raises(UserInputError, match="not one of int8, int4, nf4"):
        load_model(str(tiny_llama_dir), quant="int3")
    with pytest.raises(UserInputError, match="merge first"):  # the adapter's update would be lost
        load_model(str(tiny_llama_dir), quant="nf4", adapter=str(tiny_llama_dir))


def test_gguf_methods_write_one_verified_file(tmp_path, tiny_llama_dir):
    result = quantize(tiny_llama_dir, tmp_path / "m.gguf", method="gguf-q6_k")
    assert result.checks["pre_tokenizer"] == "gpt-2" and (tmp_path / "m.gguf").stat().st_size == result.size_bytes
    with pytest.raises(UserInputError, match="give OUT a .gguf name"):
        quantize(tiny_llama_dir, tmp_path / "folder", method="gguf-q8_0")


def test_gptq_calibrates_on_lmforge_data_and_lmforge_reloads_it(tmp_path, tiny_llama_dir):
    pytest.importorskip("gptqmodel", reason="GPTQ is the optional extra lmforge[gptq]")
    result = quantize(tiny_llama_dir, tmp_path / "gptq", method="gptq", calibration="builtin:corpus", samples=8)
    config = json.loads((tmp_path / "gptq" / "config.json").read_text())["quantization_config"]
    assert (config["quant_method"], config["bits"], config["group_size"]) == ("gptq", 4, 32)  # hidden 64: not 128
    assert result.checks["quantized_layers"] == 14 and result.checks["calibration_examples"] == 8
    assert inspect_path(tmp_path / "gptq").quantization == "GPTQ 4-bit"
    # 4-bit groups of 32 on a random hidden-64 init: measured 14% of the logits' scale, like torchao's int4
    assert result.checks["max_logit_difference_vs_float"] < 0.3 * result.checks["logit_scale"]
    loaded = load_model(str(tmp_path / "gptq"))
    assert hasattr(loaded.model.model.layers[0].mlp.up_proj, "qweight")
    # the report counts the weights GPTQ packs into int32 buffers, which num_parameters leaves out
    report = compare(tiny_llama_dir, [(str(tmp_path / "gptq"), "gptq")], limit=2, runs=3)
    assert report.compressed[0].params == report.original.params
    assert report.compressed[0].load_bytes < report.original.load_bytes
    original = load_model(str(tiny_llama_dir))
    probe = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        difference = (loaded.model(probe).logits - original.model(probe).logits).abs().max()
    assert difference < 0.3 * result.checks["logit_scale"]


def test_gptq_without_its_extra_says_what_to_install(tmp_path, tiny_llama_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "gptqmodel", None)  # what `import gptqmodel` meets where it is not installed
    with pytest.raises(DependencyError, match=r"lmforge\[gptq\]"):
        quantize(tiny_llama_dir, tmp_path / "out", method="gptq")
    assert not (tmp_path / "out").exists()
