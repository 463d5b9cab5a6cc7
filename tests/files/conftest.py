"""Model files written by the real writers (safetensors, gguf, torch, numpy, onnx), tiny and generated."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest


def write_safetensors_raw(path: Path, header: dict, data: bytes = b"", header_pad: bytes = b"") -> Path:
    """A safetensors file from a header dict and data bytes, without the library's own checks."""
    header_bytes = json.dumps(header).encode() + header_pad
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + data)
    return path


@pytest.fixture
def small_safetensors(tmp_path: Path) -> Path:
    """A Llama-named safetensors file: F32, BF16 and F16 tensors and __metadata__."""
    import torch
    from safetensors.torch import save_file

    tensors = {
        "model.embed_tokens.weight": torch.zeros(32, 8),
        "model.layers.0.self_attn.q_proj.weight": torch.zeros(8, 8, dtype=torch.bfloat16),
        "model.layers.0.mlp.up_proj.weight": torch.zeros(16, 8, dtype=torch.float16),
        "model.layers.0.input_layernorm.weight": torch.ones(8),
        "lm_head.weight": torch.zeros(32, 8),
    }
    path = tmp_path / "weights.bin"  # a misleading name: detection goes by bytes
    save_file(tensors, str(path), metadata={"format": "pt", "source": "test"})
    return path


@pytest.fixture(scope="session")
def small_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF v3 file with f32, f16 and q8_0 tensors, a vocabulary and llama metadata."""
    import gguf
    from gguf import quants

    path = tmp_path_factory.mktemp("gguf") / "tiny-llama-1B-Q8_0.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_chat_template("{{ messages }}")
    writer.add_tensor("token_embd.weight", np.ones((300, 64), np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.ones((64, 64), np.float16))
    q8 = quants.quantize(
        np.linspace(-1, 1, 128 * 64, dtype=np.float32).reshape(128, 64), gguf.GGMLQuantizationType.Q8_0
    )
    writer.add_tensor("blk.0.ffn_up.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output.weight", np.ones((300, 64), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def torch_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same state dict saved as a torch zip (under an unusual folder name) and in the legacy format."""
    import torch

    folder = tmp_path_factory.mktemp("torch")
    state = {
        "encoder.layer.0.attention.self.query.weight": torch.zeros(4, 6),
        "encoder.layer.0.output.dense.bias": torch.zeros(6, dtype=torch.float16),
        "embeddings.word_embeddings.weight": torch.zeros(10, 4, dtype=torch.bfloat16),
    }
    torch.save(state, folder / "zip.pt")
    torch.save(state, folder / "legacy.bin", _use_new_zipfile_serialization=False)
    return {"zip": folder / "zip.pt", "legacy": folder / "legacy.bin"}


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-node ONNX graph (MatMul with a 4×3 initializer), opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), name="linear.weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input_ids", "linear.weight"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="lmforge-test")
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture
def sharded_moe_dir(tmp_path: Path) -> Path:
    """A Mixtral-style model folder: 4 experts, 2 per token, weights in two shards plus an index."""
    import torch
    from safetensors.torch import save_file

    tmp_path = tmp_path / "moe"
    tmp_path.mkdir()
    hidden, ffn = 8, 16
    first = {"model.embed_tokens.weight": torch.zeros(20, hidden), "model.norm.weight": torch.ones(hidden)}
    second = {"model.layers.0.self_attn.q_proj.weight": torch.zeros(hidden, hidden)}
    second["model.layers.0.block_sparse_moe.gate.weight"] = torch.zeros(4, hidden)
    for expert in range(4):
        for name, shape in (("w1", (ffn, hidden)), ("w2", (hidden, ffn)), ("w3", (ffn, hidden))):
            second[f"model.layers.0.block_sparse_moe.experts.{expert}.{name}.weight"] = torch.zeros(*shape)
    save_file(first, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(second, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = dict.fromkeys(first, "model-00001-of-00002.safetensors")
    weight_map |= dict.fromkeys(second, "model-00002-of-00002.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "vocab_size": 20,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.fixture
def peft_adapter_dir(tmp_path: Path) -> Path:
    """A LoRA adapter folder as peft writes it: adapter_config.json + adapter_model.safetensors."""
    import torch
    from safetensors.torch import save_file

    tmp_path = tmp_path / "adapter"
    tmp_path.mkdir()
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {f"{prefix}.lora_A.weight": torch.zeros(4, 64), f"{prefix}.lora_B.weight": torch.zeros(64, 4)},
        str(tmp_path / "adapter_model.safetensors"),
    )
    adapter = {"peft_type": "LORA", "base_model_name_or_path": "tiny-llama", "r": 4, "lora_alpha": 8,
               "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}  # fmt: skip
    (tmp_path / "adapter_config.json").write_text(json.dumps(adapter))
    return tmp_path


@pytest.fixture(scope="session")
def scan_corpus(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path):
    """The scanner corpus (tests/files/corpus.py): malicious payloads that would create `canary`, and real benign checkpoints."""
    from tests.files.corpus import build_corpus

    root = tmp_path_factory.mktemp("scan-corpus")
    canary = root / "CANARY"
    return build_corpus(root / "files", canary, minilm_dir), canary
