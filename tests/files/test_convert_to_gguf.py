"""convert to GGUF: llama.cpp's metadata, vocabulary and tensor layout, read back with gguf's reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lmforge.errors import UserInputError
from lmforge.files.convert import convert_model
from lmforge.files.convert.to_gguf import error_bound

Q = gguf.GGMLQuantizationType
EXPECTED_MATRIX_TYPE = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}


def _field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def _values(tensor) -> np.ndarray:
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(tuple(reversed(tensor.shape.tolist())))


@pytest.fixture(scope="module")
def source(tiny_llama_dir: Path) -> dict[str, np.ndarray]:
    return {name: tensor.float().numpy() for name, tensor in load_file(tiny_llama_dir / "model.safetensors").items()}


@pytest.mark.parametrize("quant", ["f32", "f16", "bf16", "q8_0", "q4_0"])
def test_llama_gguf_has_metadata_vocab_and_values_within_the_quant_bound(
    tmp_path, tiny_llama_dir, tiny_tokenizer, source, quant
):
    report = convert_model(tiny_llama_dir, tmp_path / "model.gguf", quant=quant, progress=False)

    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == config["num_hidden_layers"]
    assert _field(reader, "llama.attention.head_count_kv") == config["num_key_value_heads"]
    assert _field(reader, "llama.rope.dimension_count") == config["hidden_size"] // config["num_attention_heads"]
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == config["vocab_size"] and tokens[tiny_tokenizer.eos_token_id] == "<|im_end|>"
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tiny_tokenizer.eos_token_id
    assert _field(reader, "tokenizer.ggml.padding_token_id") == tiny_tokenizer.pad_token_id
    assert len(_field(reader, "tokenizer.ggml.merges")) > 0
    assert "<|im_start|>" in _field(reader, "tokenizer.chat_template")

    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert len(tensors) == len(source) == report.tensor_count
    assert tensors["blk.0.attn_norm.weight"].tensor_type == Q.F32  # norms stay f32, as llama.cpp's converter does
    up = tensors["blk.1.ffn_up.weight"]
    assert up.tensor_type == EXPECTED_MATRIX_TYPE[quant]
    original = source["model.layers.1.mlp.up_proj.weight"]
    assert _values(up).shape == original.shape
    error = np.abs(_values(up) - original)
    assert (error <= error_bound(original, up.tensor_type)).all()
    if quant == "f32":
        assert error.max() == 0


def test_q4_0_is_smaller_than_q8_0_smaller_than_f16(tmp_path, tiny_llama_dir):
    sizes = {
        quant: convert_model(tiny_llama_dir, tmp_path / f"{quant}.gguf", quant=quant, progress=False).size_bytes
        for quant in ("f16", "q8_0", "q4_0")
    }
    assert sizes["q4_0"] < sizes["q8_0"] < sizes["f16"]


def test_q_and_k_rows_are_permuted_to_ggml_rotary_pairs(tmp_path, tiny_llama_dir, source):
    """HF pairs dimension i with i + d/2 (rotate_half); ggml pairs 2i with 2i+1 (llama.cpp's permute)."""
    convert_model(tiny_llama_dir, tmp_path / "f32.gguf", quant="f32", progress=False)
    tensors = {tensor.name: _values(tensor) for tensor in gguf.GGUFReader(tmp_path / "f32.gguf").tensors}
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    for gguf_name, hf_name, heads in (
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", config["num_attention_heads"]),
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", config["num_key_value_heads"]),
    ):
        hf, converted = source[hf_name], tensors[gguf_name]
        for head in range(heads):
            for i in range(head_dim // 2):
                assert np.array_equal(converted[head * head_dim + 2 * i], hf[head * head_dim + i])
                assert np.array_equal(converted[head * head_dim + 2 * i + 1], hf[head * head_dim + head_dim // 2 + i])
    assert np.array_equal(tensors["blk.0.attn_v.weight"], source["model.layers.0.self_attn.v_proj.weight"])


@pytest.fixture
def tiny_qwen2_dir(tmp_path: Path, tiny_tokenizer) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tiny_tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path / "tiny-qwen2"
    Qwen2ForCausalLM(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_qwen2_keeps_q_k_v_biases_unpermuted_and_ties_the_output(tmp_path, tiny_qwen2_dir):
    report = convert_model(tiny_qwen2_dir, tmp_path / "qwen.gguf", quant="q8_0", progress=False)

    reader = gguf.GGUFReader(tmp_path / "qwen.gguf")
    assert _field(reader, "general.architecture") == "qwen2" and report.checks["architecture"] == "qwen2"
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"} <= set(tensors)
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    source = load_file(tiny_qwen2_dir / "model.safetensors")
    assert np.array_equal(_values(tensors["blk.0.attn_q.bias"]), source["model.layers.0.self_attn.q_proj.bias"].numpy())


def test_unsupported_architecture_is_a_clear_error(tmp_path, minilm_dir):
    with pytest.raises(UserInputError, match="supports llama, mistral, qwen2, qwen3; this model is 'bert'"):
        convert_model(minilm_dir, tmp_path / "bert.gguf", progress=False)
    assert not (tmp_path / "bert.gguf").exists()


def test_unknown_quant_is_a_user_error(tmp_path, tiny_llama_dir):
    with pytest.raises(UserInputError, match="q4_0"):
        convert_model(tiny_llama_dir, tmp_path / "x.gguf", quant="q5_k", progress=False)


def test_a_failed_write_leaves_no_file(tmp_path, tiny_llama_dir, monkeypatch):
    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", broken)
    with pytest.raises(OSError, match="disk full"):
        convert_model(tiny_llama_dir, tmp_path / "model.gguf", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_pickle_weights_are_scanned_and_converted(tmp_path, tiny_llama_dir, source):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_llama_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()

    convert_model(folder, tmp_path / "model.gguf", quant="f32", progress=False)

    tensors = {tensor.name: _values(tensor) for tensor in gguf.GGUFReader(tmp_path / "model.gguf").tensors}
    assert np.array_equal(tensors["token_embd.weight"], source["model.embed_tokens.weight"])


@pytest.fixture
def sentencepiece_llama_dir(tmp_path: Path) -> Path:
    """A Llama-2 style tokenizer (BPE with byte fallback, ▁ for spaces) and a model with 16 spare rows."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.conftest import TINY_CORPUS

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    tokenizer.train_from_iterator(
        TINY_CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast) + 16,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=1,
        eos_token_id=2,
    )
    path = tmp_path / "spm-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_sentencepiece_style_vocab_is_written_as_llama_with_byte_tokens_and_padding(tmp_path, sentencepiece_llama_dir):
    report = convert_model(sentencepiece_llama_dir, tmp_path / "spm.gguf", progress=False)

    reader = gguf.GGUFReader(tmp_path / "spm.gguf")
    assert report.checks["tokenizer"] == "llama" and _field(reader, "tokenizer.ggml.model") == "llama"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == len(_field(reader, "tokenizer.ggml.scores")) == 416
    assert tokens[3 + 0x41] == "<0x41>" and types[3 + 0x41] == gguf.TokenType.BYTE
    assert tokens[1] == "<s>" and types[1] == gguf.TokenType.CONTROL
    assert tokens[-1] == "[PAD415]" and types[-1] == gguf.TokenType.UNUSED
    assert _field(reader, "tokenizer.ggml.bos_token_id") == 1 and _field(reader, "tokenizer.ggml.eos_token_id") == 2


def test_transformers_gguf_loader_gets_the_same_model_and_tokenizer_back(tmp_path, tiny_llama_dir):
    """An independent reader of llama.cpp's layout (transformers' GGUF integration un-permutes Q/K and
    rebuilds the tokenizer) stands in for llama-cpp-python, which does not build here."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = "What is 12 plus 30? The answer is 42."
    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        expected = original(ids).logits
    for quant, tolerance in (("f32", 0.0), ("f16", 1e-3), ("bf16", 1e-2), ("q8_0", 2e-2)):
        convert_model(tiny_llama_dir, tmp_path / f"{quant}.gguf", quant=quant, progress=False)
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f"{quant}.gguf", dtype=torch.float32).eval()
        with torch.no_grad():
            assert (loaded(ids).logits - expected).abs().max() <= tolerance, quant
    from_gguf = AutoTokenizer.from_pretrained(tmp_path, gguf_file="f32.gguf")
    assert from_gguf(text).input_ids == tokenizer(text).input_ids


def test_rows_that_are_not_whole_blocks_fall_back_to_f16_with_a_note(tmp_path, tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "odd")
    tiny_tokenizer.save_pretrained(tmp_path / "odd")

    report = convert_model(tmp_path / "odd", tmp_path / "odd.gguf", quant="q4_0", progress=False)

    types = {tensor.name: tensor.tensor_type for tensor in gguf.GGUFReader(tmp_path / "odd.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == Q.F16  # 48 values per row: not a whole number of 32-value blocks
    assert types["blk.0.ffn_down.weight"] == Q.Q4_0  # 64 per row
    assert any("kept in f16" in note for note in report.notes)
