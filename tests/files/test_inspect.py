import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmforge.errors import NotFoundError, UserInputError
from lmforge.files.inspect import component_of, filter_tensors, inspect_path


def test_real_minilm_checkpoint(minilm_dir: Path):
    report = inspect_path(minilm_dir)
    assert (report.format, report.architecture, report.model_type) == ("hf-model-dir", "BertModel", "bert")
    assert report.tensor_count == 104
    # transformers' own count (sum of model.parameters()); the I64 position_ids buffer is reported apart.
    assert report.total_params == 22_713_216 and report.buffers == {"embeddings.position_ids": 512}
    assert report.params_by_dtype == {"F32": 22_713_216}
    assert report.params_by_component == {
        "embeddings": 11_917_824, "norms": 9_984, "attention": 3_548_160, "mlp": 7_089_408, "head": 147_840,
    }  # fmt: skip
    assert [f.name for f in report.files] == ["model.safetensors"] and report.total_size_bytes == 90_868_376
    assert report.config["hidden_size"] == 384 and report.config["num_layers"] == 6
    assert report.tokenizer["vocab_size"] == 30522 and "tokenizer.json" in report.tokenizer["files"]
    assert report.quantization is None and report.bits_per_weight == pytest.approx(32, abs=0.01)
    assert report.scan.verdict == "not-needed"
    runtimes = {r.runtime: r.can_load for r in report.runtimes}
    assert runtimes == {"transformers": True, "vLLM": True, "llama.cpp": False, "onnxruntime": False}
    json.dumps(report.to_dict())  # serialisable as is


def test_single_safetensors_file_needs_a_config_for_transformers(small_safetensors: Path):
    report = inspect_path(small_safetensors)
    assert report.format == "safetensors" and report.metadata == {"format": "pt", "source": "test"}
    assert report.params_by_dtype == {"F32": 32 * 8 * 2 + 8, "BF16": 64, "F16": 128}
    assert report.params_by_component == {"embeddings": 256, "attention": 64, "mlp": 128, "norms": 8, "head": 256}
    transformers = next(r for r in report.runtimes if r.runtime == "transformers")
    assert not transformers.can_load and "config.json" in transformers.reason


def test_sharded_moe_folder_counts_total_and_active(sharded_moe_dir: Path):
    report = inspect_path(sharded_moe_dir)
    assert len(report.files) == 2 and report.tensor_count == 2 + 2 + 12
    assert report.total_params == 1800
    assert report.params_by_component["experts"] == 1536
    assert (report.num_experts, report.experts_per_token) == (4, 2)
    assert report.active_params == 1800 - 1536 // 2  # 2 of 4 experts run per token
    index_only = inspect_path(sharded_moe_dir / "model.safetensors.index.json")
    assert index_only.format == "safetensors-sharded" and index_only.total_params == 1800


def test_missing_shard_is_named(sharded_moe_dir: Path):
    (sharded_moe_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(NotFoundError, match="model-00002-of-00002"):
        inspect_path(sharded_moe_dir)


def test_gguf_quantization_tokenizer_and_runtimes(small_gguf: Path):
    report = inspect_path(small_gguf)
    assert report.format == "gguf" and report.architecture == "llama"
    assert report.quantization == "Q8_0 (GGUF file type)"
    assert report.params_by_dtype == {"F32": 300 * 64 + 64, "F16": 64 * 64 + 300 * 64, "Q8_0": 128 * 64}
    assert report.params_by_component["head"] == 300 * 64 and report.params_by_component["norms"] == 64
    assert report.tokenizer == {"model": "gpt2", "vocab_size": 300, "chat_template": True}
    assert next(t for t in report.tensors if t.dtype == "Q8_0").shape == [128, 64]  # PyTorch order
    assert {r.runtime for r in report.runtimes if r.can_load} >= {"llama.cpp"}
    assert report.name is not None and report.name.total_params == 10**9  # parsed from the file name


def test_torch_checkpoints_list_tensors_without_loading(torch_checkpoints: dict[str, Path]):
    zip_report = inspect_path(torch_checkpoints["zip"])
    legacy_report = inspect_path(torch_checkpoints["legacy"])
    for report in (zip_report, legacy_report):
        shapes = {t.name: (t.dtype, t.shape) for t in report.tensors}
        assert shapes == {
            "encoder.layer.0.attention.self.query.weight": ("F32", [4, 6]),
            "encoder.layer.0.output.dense.bias": ("F16", [6]),
            "embeddings.word_embeddings.weight": ("BF16", [10, 4]),
        }
        assert report.params_by_component == {"attention": 24, "mlp": 6, "embeddings": 40}
        assert report.scan.verdict == "safe"


def test_malicious_pickle_is_flagged_and_no_runtime_may_load_it(tmp_path: Path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    report = inspect_path(path)
    assert report.format == "pickle" and report.scan.verdict == "unsafe"
    assert not any(r.can_load for r in report.runtimes)


def test_onnx_opset_inputs_outputs(tiny_onnx: Path):
    report = inspect_path(tiny_onnx)
    assert report.onnx["opsets"] == {"ai.onnx": 17}
    assert report.onnx["inputs"] == [{"name": "input_ids", "dtype": "FLOAT", "shape": ["batch", 4]}]
    assert report.onnx["outputs"][0]["name"] == "logits"
    assert report.total_params == 12 and report.tensors[0].dtype == "FLOAT"
    assert [r.runtime for r in report.runtimes if r.can_load] == ["onnxruntime"]


def test_peft_adapter_folder(peft_adapter_dir: Path):
    report = inspect_path(peft_adapter_dir)
    assert report.format == "peft-adapter-dir"
    assert report.metadata["base_model_name_or_path"] == "tiny-llama" and report.metadata["r"] == 4
    assert report.params_by_component == {"adapter": 512}


def test_numpy_arrays(tmp_path: Path):
    import numpy as np

    np.savez(tmp_path / "w.npz", a=np.ones((2, 3), np.float16), b=np.ones(4))
    report = inspect_path(tmp_path / "w.npz")
    assert {t.name: t.shape for t in report.tensors} == {"a": [2, 3], "b": [4]}
    assert report.params_by_dtype == {"<f2": 6, "<f8": 4}


def test_gptq_packed_weights_count_as_logical_params(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    save_file(
        {
            "model.layers.0.mlp.up_proj.qweight": torch.zeros(64 // 8, 32, dtype=torch.int32),
            "model.layers.0.mlp.up_proj.scales": torch.zeros(1, 32, dtype=torch.float16),
            "model.layers.0.mlp.up_proj.qzeros": torch.zeros(1, 4, dtype=torch.int32),
        },
        str(tmp_path / "model.safetensors"),
    )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "quantization_config": {"quant_method": "gptq", "bits": 4},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = inspect_path(tmp_path)
    assert report.quantization == "GPTQ 4-bit"
    assert report.total_params == 64 * 32
    assert report.bits_per_weight == pytest.approx((8 * 32 * 4 + 32 * 2 + 16) * 8 / (64 * 32), abs=1e-3)


def test_a_missing_path_is_named_and_never_taken_for_a_hub_id(tmp_path: Path):
    """inspect_path reads this machine only: resolving a hub id or a run is lmforge.hub.locate_model's job."""
    with pytest.raises(NotFoundError, match="acme/MiniLM-L6-v2 does not exist"):
        inspect_path("acme/MiniLM-L6-v2")


@pytest.mark.parametrize(
    ("name", "component"),
    [
        ("model.layers.3.self_attn.k_proj.weight", "attention"),
        ("model.layers.3.mlp.gate_proj.weight", "mlp"),
        ("model.layers.3.post_attention_layernorm.weight", "norms"),
        ("model.layers.3.mlp.experts.7.down_proj.weight", "experts"),
        ("model.layers.3.mlp.shared_experts.up_proj.weight", "mlp"),
        ("model.layers.3.self_attn.kv_a_proj_with_mqa.weight", "attention"),
        ("transformer.h.0.attn.c_attn.weight", "attention"),
        ("transformer.h.0.mlp.c_proj.weight", "mlp"),
        ("transformer.wte.weight", "embeddings"),
        ("transformer.ln_f.weight", "norms"),
        ("encoder.block.0.layer.1.DenseReluDense.wi.weight", "mlp"),
        ("encoder.block.0.layer.0.SelfAttention.q.weight", "attention"),
        ("shared.weight", "embeddings"),
        ("blk.0.ffn_gate_exps.weight", "experts"),
        ("blk.0.ffn_gate_inp.weight", "mlp"),
        ("blk.0.attn_output.weight", "attention"),
        ("output_norm.weight", "norms"),
        ("output.weight", "head"),
        ("lm_head.weight", "head"),
        ("cls.predictions.transform.dense.weight", "head"),
    ],
)
def test_components_across_naming_schemes(name: str, component: str):
    assert component_of(name) == component


def test_filter_by_glob_or_regex(small_safetensors: Path):
    tensors = inspect_path(small_safetensors).tensors
    assert [t.name for t in filter_tensors(tensors, "*.q_proj.*")] == ["model.layers.0.self_attn.q_proj.weight"]
    assert len(filter_tensors(tensors, r"layers\.0\.")) == 3
    with pytest.raises(UserInputError, match="regular expression"):
        filter_tensors(tensors, "(unclosed")


def test_a_copied_real_checkpoint_renamed_is_still_found(minilm_dir: Path, tmp_path: Path):
    shutil.copy(minilm_dir / "model.safetensors", tmp_path / "weights.pt")
    assert inspect_path(tmp_path / "weights.pt").format == "safetensors"


def test_config_only_folder_counts_from_the_architecture(tmp_path: Path):
    config = {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
        "num_experts_per_tok": 2, "vocab_size": 32000, "max_position_embeddings": 32768, "tie_word_embeddings": False,
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = inspect_path(tmp_path)
    # Mixtral 8x7B: 46.7B total, 12.9B active per token (Mistral AI's model card)
    assert (report.total_params, report.active_params) == (46_702_792_704, 12_879_925_248)
    assert (report.num_experts, report.experts_per_token) == (8, 2)
    assert any("computed from config.json" in note for note in report.notes)
    assert not next(r for r in report.runtimes if r.runtime == "transformers").can_load


def test_generation_config_and_chat_template_are_reported(sharded_moe_dir: Path):
    (sharded_moe_dir / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [2, 7], "transformers_version": "5"})
    )
    (sharded_moe_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    report = inspect_path(sharded_moe_dir)
    assert report.generation == {"eos_token_id": [2, 7]}
    assert report.tokenizer["chat_template"] is True and report.tokenizer["files"] == ["tokenizer_config.json"]


def test_split_gguf_is_read_as_one_model(tmp_path: Path):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama", split_max_tensors=2)
    writer.add_block_count(1)
    for index in range(5):
        writer.add_tensor(f"blk.0.ffn_up_{index}.weight", np.ones((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    second = tmp_path / "model-00002-of-00003.gguf"
    report = inspect_path(second)
    assert len(report.files) == 3 and report.tensor_count == 5 and report.total_params == 5 * 32
    assert report.architecture == "llama"
    second.unlink()
    with pytest.raises(NotFoundError, match="model-00002-of-00003.gguf is missing"):
        inspect_path(tmp_path / "model-00001-of-00003.gguf")


def test_gguf_moe_active_params_from_expert_metadata(tmp_path: Path):
    import gguf
    import numpy as np

    path = tmp_path / "moe.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen3moe")
    writer.add_expert_count(4)
    writer.add_expert_used_count(1)
    writer.add_tensor("blk.0.attn_q.weight", np.ones((8, 8), np.float32))
    writer.add_tensor("blk.0.ffn_gate_inp.weight", np.ones((4, 8), np.float32))
    writer.add_tensor("blk.0.ffn_up_exps.weight", np.ones((4, 16, 8), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    report = inspect_path(path)
    assert (report.num_experts, report.experts_per_token) == (4, 1)
    assert report.params_by_component == {"attention": 64, "mlp": 32, "experts": 512}
    assert report.active_params == 64 + 32 + 512 // 4


@pytest.mark.parametrize(
    ("architecture", "llama_cpp", "vllm"), [("llama", True, True), ("rwkv7", True, False), ("notanarch", False, False)]
)
def test_gguf_runtime_verdicts_follow_each_runtimes_architectures(
    tmp_path: Path, architecture: str, llama_cpp: bool, vllm: bool
):
    """llama.cpp runs the architectures of its own list; vLLM reads GGUF through transformers, so only those."""
    import gguf

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    runtimes = {r.runtime: r for r in inspect_path(path).runtimes}
    assert runtimes["llama.cpp"].can_load is llama_cpp and runtimes["vLLM"].can_load is vllm
    if not llama_cpp:
        assert "llama.cpp has no architecture" in runtimes["llama.cpp"].reason


def test_an_onnx_export_counts_a_tied_lm_head_once_and_is_named_onnx(tmp_path: Path):
    """Exporters write a tied lm_head as its own initializer holding the embedding's transpose (measured on
    `lmforge convert` of a tied tiny Llama: 119,616 counted for 96,960 parameters); a folder with config.json
    beside the graph is an ONNX export, not an HF model folder."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    embedding = np.arange(15, dtype=np.float32).reshape(5, 3)
    norm = np.ones(3, np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["embed.weight", "input_ids"], ["hidden"]),
            helper.make_node("Mul", ["hidden", "norm_a.weight"], ["normed_a"]),
            helper.make_node("Mul", ["normed_a", "norm_b.weight"], ["normed"]),
            helper.make_node("MatMul", ["normed", "onnx::MatMul_9"], ["logits"]),
        ],
        "tied",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", 5])],
        [
            numpy_helper.from_array(embedding, "embed.weight"),
            numpy_helper.from_array(norm, "norm_a.weight"),
            numpy_helper.from_array(norm.copy(), "norm_b.weight"),
            numpy_helper.from_array(embedding.T.copy(), "onnx::MatMul_9"),
        ],
    )
    folder = tmp_path / "exported"
    folder.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "model.onnx"))
    (folder / "config.json").write_text(
        json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "tie_word_embeddings": True})
    )
    report = inspect_path(folder)
    assert report.format == "onnx-model-dir"
    assert report.total_params == 15 + 3 + 3  # the two equal norms are two weights; the transpose is the tie
    assert report.shared == {"onnx::MatMul_9": "embed.weight"}
    assert [r.runtime for r in report.runtimes if r.can_load] == ["onnxruntime"]


def test_a_factorized_folder_is_recognised_as_low_rank(tmp_path, tiny_llama_dir):
    from lmforge.compress import factorize

    result = factorize(tiny_llama_dir, tmp_path / "svd", energy=0.7)
    report = inspect_path(tmp_path / "svd")
    assert report.quantization == f"low-rank SVD, {len(result.ranks)} layers (lmforge compress factorize)"
    assert report.total_params == result.params_after


@pytest.mark.parametrize(
    ("quant_config", "kind"),
    [
        ({"quant_type": {"default": {"_type": "Int8WeightOnlyConfig", "_data": {}}}}, "Int8WeightOnlyConfig"),
        (
            {
                "quant_type": {
                    "default": {"_type": "IntxWeightOnlyConfig", "_data": {"weight_dtype": {"_data": "torch.int4"}}}
                }
            },
            "IntxWeightOnlyConfig int4",
        ),
        ({"quant_type": "int4_weight_only"}, "?"),  # older TorchAoConfig files name the scheme in a string
        ({"quant_type": {"default": {"_type": "X", "_data": "not a dict"}}}, "X"),
    ],
)
def test_torchao_configs_of_any_shape_are_named_not_crashed_on(quant_config, kind):
    from lmforge.files.inspect import _torchao_kind

    assert _torchao_kind(quant_config) == kind
