"""Resolving models by path or catalog name (or the hub id a catalog entry mirrors), and reading every config
convention. Hub ids beyond the catalog: tests/hub/test_spec.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.errors import ConfigError, NotFoundError
from lmforge.plan.models import list_catalog, resolve_model, spec_from_config
from lmforge.plan.params import count_params

pytestmark = pytest.mark.usefixtures("empty_hf_cache")

REQUIRED = [
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen2.5-3b",
    "qwen2.5-7b",
    "qwen2.5-14b",
    "qwen2.5-32b",
    "qwen2.5-72b",
    "qwen3-0.6b",
    "qwen3-8b",
    "qwen3-32b",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "mistral-7b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "deepseek-v3",
    "gemma-2-2b",
    "gemma-2-9b",
    "gemma-2-27b",
    "gemma-3-1b",
    "phi-3-mini",
    "phi-4",
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "bert-base-uncased",
    "roberta-base",
    "t5-base",
]


def test_catalog_holds_the_popular_models_under_typeable_names() -> None:
    specs = list_catalog()
    names = [s.name for s in specs]
    assert len(specs) >= 25 and len(set(names)) == len(names)
    assert set(REQUIRED) <= set(names)
    for spec in specs:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", spec.name), spec.name
        assert spec.hf_id and "/" in spec.hf_id
        assert spec.config["architectures"][0] == spec.architecture


@pytest.mark.parametrize(
    "text", ["llama-3.1-8b", "LLaMA-3.1-8B", "  llama-3.1-8b ", "meta-llama/Llama-3.1-8B", "META-LLAMA/llama-3.1-8b"]
)
def test_catalog_names_and_hub_ids_resolve_ignoring_case(text: str) -> None:
    spec = resolve_model(text)
    assert spec.name == "llama-3.1-8b" and spec.hf_id == "meta-llama/Llama-3.1-8B"
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim, spec.vocab_size) == (32, 8, 128, 128256)


def test_editing_a_spec_config_leaves_the_catalog_alone() -> None:
    resolve_model("llama-3.1-8b").config["rope_scaling"]["factor"] = 1.0
    assert resolve_model("llama-3.1-8b").config["rope_scaling"]["factor"] == 8.0


def test_local_directory_and_config_file_resolve(write_config) -> None:
    folder = write_config(resolve_model("qwen2.5-0.5b").config, "my-finetune")
    from_dir = resolve_model(str(folder))
    from_file = resolve_model(str(folder / "config.json"))
    assert from_dir.name == str(folder) and from_dir.hf_id is None
    assert count_params(from_dir).total_params == count_params(from_file).total_params == 494_032_768


def test_saved_transformers_model_resolves(tmp_path: Path) -> None:
    """A folder written by save_pretrained (a toy Qwen2: tied embeddings, q/k/v biases) counts as loaded."""
    from transformers import AutoModelForCausalLM

    from .conftest import build_model, shrink

    build_model(shrink(resolve_model("qwen2.5-0.5b").config), device="cpu").save_pretrained(tmp_path / "saved")
    spec = resolve_model(str(tmp_path / "saved"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert spec.tie_word_embeddings and count_params(spec).total_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "typo,suggestion", [("llama-3.1-8", "llama-3.1-8b"), ("mixtrl-8x7b", "mixtral-8x7b"), ("qwen2.5-7", "qwen2.5-7b")]
)
def test_unknown_names_suggest_the_closest_catalog_names(typo: str, suggestion: str) -> None:
    with pytest.raises(NotFoundError, match=f"did you mean .*{re.escape(suggestion)}"):
        resolve_model(typo)


def test_hopeless_names_point_at_the_catalog_command() -> None:
    with pytest.raises(NotFoundError, match="lmforge models"):
        resolve_model("zzzzzz")


def test_missing_field_is_named_with_the_file(write_config) -> None:
    config = dict(resolve_model("llama-2-7b").config)
    del config["num_attention_heads"]
    folder = write_config(config)
    with pytest.raises(ConfigError, match=rf"config.json at .*{folder.name}.* missing 'num_attention_heads'"):
        resolve_model(str(folder))


def test_every_bad_field_is_reported_at_once() -> None:
    config = {**resolve_model("llama-2-7b").config, "hidden_size": "4096", "vocab_size": -1}
    with pytest.raises(ConfigError, match=r"'hidden_size' must be .*'4096'.*'vocab_size' must be"):
        spec_from_config(config, name="x")


@pytest.mark.parametrize(
    "text,message",
    [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object"), ('{"hidden_size": 8}', "missing 'model_type'")],
)
def test_malformed_config_json_is_a_config_error(write_config, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_model(str(write_config(text)))


def test_a_weights_file_is_not_mistaken_for_a_config(tmp_path: Path) -> None:
    for name, data in [
        ("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "),
        ("model.gguf", b"GGUF\x03\xff\xfe"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ConfigError, match="is not a config.json; pass a Hugging Face model folder"):
            resolve_model(str(tmp_path / name))


def test_folder_without_config_json_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="without a config.json"):
        resolve_model(str(tmp_path))


def test_heads_must_divide_into_kv_groups() -> None:
    with pytest.raises(ConfigError, match="not a multiple of num_key_value_heads=3"):
        spec_from_config({**resolve_model("llama-2-7b").config, "num_key_value_heads": 3}, name="x")


def test_config_conventions_of_each_family() -> None:
    gpt2 = resolve_model("gpt2-xl")
    assert (gpt2.hidden_size, gpt2.num_layers, gpt2.intermediate_size, gpt2.max_position_embeddings) == (
        1600,
        48,
        6400,
        1024,
    )
    assert gpt2.tie_word_embeddings and gpt2.kind == "decoder" and gpt2.num_kv_heads == 25
    t5 = resolve_model("t5-base")
    assert (t5.kind, t5.num_encoder_layers, t5.num_layers, t5.head_dim, t5.intermediate_size) == (
        "encoder-decoder",
        12,
        12,
        64,
        3072,
    )
    assert resolve_model("bert-base-uncased").kind == "encoder"
    deepseek = resolve_model("deepseek-v3")
    assert deepseek.is_mla and deepseek.is_moe
    assert (deepseek.kv_lora_rank, deepseek.q_lora_rank, deepseek.head_dim, deepseek.v_head_dim) == (
        512,
        1536,
        192,
        128,
    )
    assert (deepseek.num_experts, deepseek.experts_per_token, deepseek.num_shared_experts) == (256, 8, 1)
    assert (deepseek.moe_intermediate_size, deepseek.num_moe_layers) == (2048, 58)  # first_k_dense_replace = 3
    qwen_moe = resolve_model("qwen3-30b-a3b")
    assert (qwen_moe.num_experts, qwen_moe.experts_per_token, qwen_moe.num_moe_layers, qwen_moe.head_dim) == (
        128,
        8,
        48,
        128,
    )
    mixtral = resolve_model("mixtral-8x7b")
    assert (mixtral.num_experts, mixtral.moe_intermediate_size, mixtral.num_shared_experts) == (8, 14336, 0)
    assert resolve_model("qwen2.5-0.5b").sliding_window is None  # use_sliding_window: false
    assert resolve_model("gemma-2-27b").head_dim == 128 and resolve_model("gemma-2-9b").head_dim == 256


def test_defaults_follow_transformers_config_classes() -> None:
    base = resolve_model("qwen3-30b-a3b").config
    sparse = {**base, "decoder_sparse_step": 2, "mlp_only_layers": [1, 4]}
    assert spec_from_config(sparse, name="x").num_moe_layers == 23  # layers 1, 3, ..., 47 hold experts, but not 1
    llama = {
        k: v
        for k, v in resolve_model("llama-2-7b").config.items()
        if k not in ("tie_word_embeddings", "num_key_value_heads")
    }
    spec = spec_from_config(llama, name="x")
    assert spec.tie_word_embeddings is False and spec.num_kv_heads == 32  # LlamaConfig defaults
    gemma = {k: v for k, v in resolve_model("gemma-2-9b").config.items() if k != "head_dim"}
    assert spec_from_config(gemma, name="x").head_dim == 256  # Gemma2Config default, not hidden / heads
    gpt2 = {k: v for k, v in resolve_model("gpt2").config.items() if k != "tie_word_embeddings"}
    assert spec_from_config(gpt2, name="x").tie_word_embeddings is True


def test_multimodal_wrapper_reads_its_text_config() -> None:
    text = resolve_model("gemma-3-1b").config
    vision = {"model_type": "some_vision_model", "hidden_size": 64}
    wrapper = {
        "architectures": ["SomeForConditionalGeneration"],
        "model_type": "some_vlm",
        "text_config": text,
        "vision_config": vision,
    }
    spec = spec_from_config(wrapper, name="vlm")
    assert (spec.model_type, spec.num_layers, spec.hidden_size) == ("gemma3_text", 26, 1152)
    assert spec.vision_config == vision and spec.text_config == text and spec.config == wrapper
    assert not count_params(spec).exact  # an unknown vision tower is not counted


def test_planner_modules_import_neither_torch_nor_transformers() -> None:
    """Cold start matters (benchmarks/plan_cold_start.py times it): the planner and the hub's resolution of a
    catalog hub id (what `lmforge plan` runs) import neither torch, transformers, huggingface_hub nor peft."""
    code = (
        "import sys; import lmforge.plan.models, lmforge.plan.params, lmforge.hub.spec; "
        "lmforge.plan.models.resolve_model('llama-3.1-70b'); lmforge.hub.spec.model_spec('Qwen/Qwen3-8B'); "
        "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"


@pytest.mark.parametrize("spec", [s for s in list_catalog() if s.sliding_window], ids=lambda s: s.name)
def test_sliding_layers_match_transformers_layer_types(spec) -> None:
    from .conftest import hf_config

    config = hf_config(spec)
    text = config.get_text_config()
    types = getattr(text, "layer_types", None) or ["sliding_attention"] * text.num_hidden_layers
    assert spec.num_sliding_layers == types.count("sliding_attention")
    assert 0 < spec.num_sliding_layers <= spec.num_layers


def test_qwen_sliding_window_applies_from_max_window_layers() -> None:
    config = {**resolve_model("qwen2.5-7b").config, "use_sliding_window": True, "max_window_layers": 20}
    spec = spec_from_config(config, name="x")
    assert (spec.sliding_window, spec.num_sliding_layers) == (131072, 8)
    assert resolve_model("qwen2.5-7b").num_sliding_layers == 0  # use_sliding_window: false
