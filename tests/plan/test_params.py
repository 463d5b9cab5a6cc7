"""Parameter counts against the real thing: transformers models on the meta device, and peft adapters."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.errors import UserInputError
from lmforge.plan.models import as_sequence_classifier, list_catalog, resolve_model, spec_from_config
from lmforge.plan.params import COMPONENTS, count_params, count_trainable_params, default_lora_targets
from lmforge.plan.spec import ModelSpec

from .conftest import build_model, numel, shrink, small_spec

CATALOG = list_catalog()


def _blocks(model, spec: ModelSpec) -> list:
    """The transformer blocks of a built model, in execution order (encoder first)."""
    if spec.model_type in ("gpt2", "falcon", "bloom"):
        return list(model.transformer.h)
    if spec.model_type in ("bert", "roberta"):
        return list(model.base_model.encoder.layer)
    if spec.model_type == "t5":
        return [*model.encoder.block, *model.decoder.block]
    if spec.vision_config is not None:
        return list(model.model.language_model.layers)
    return list(model.base_model.layers)


@pytest.mark.parametrize("spec", CATALOG, ids=[s.name for s in CATALOG])
def test_total_and_per_layer_counts_equal_the_meta_model(spec: ModelSpec) -> None:
    model = build_model(spec.config)
    counts = count_params(spec)
    assert counts.total_params == numel(model)
    assert counts.layer_params == tuple(numel(block) for block in _blocks(model, spec))
    assert counts.embedding_params + sum(counts.layer_params) + counts.output_params == counts.total_params
    assert sum(counts.by_component[c] for c in COMPONENTS) == counts.total_params


@pytest.mark.parametrize(
    "name", ["llama-3.1-8b", "qwen3-30b-a3b", "qwen1.5-moe-a2.7b", "deepseek-v3", "gemma-3-1b", "phi-4"]
)
def test_components_match_the_modules_they_name(name: str) -> None:
    """attention = params under self_attn (minus its norms), norms = every *norm*, head = lm_head."""
    spec = resolve_model(name)
    model = build_model(spec.config)
    named = list(model.named_parameters())
    counts = count_params(spec).by_component
    norms = sum(p.numel() for n, p in named if "norm" in n)
    attention = sum(p.numel() for n, p in named if ".self_attn." in n and "norm" not in n)
    mlp = sum(p.numel() for n, p in named if ".mlp." in n)
    embeddings = model.model.embed_tokens.weight.numel()
    assert (counts["norms"], counts["attention"], counts["mlp"], counts["embeddings"]) == (
        norms,
        attention,
        mlp,
        embeddings,
    )
    assert counts["head"] == (0 if spec.tie_word_embeddings else model.lm_head.weight.numel())


# Totals published on the models' hub pages / papers (safetensors parameter counts).
PUBLISHED_TOTALS = {
    "llama-3.1-8b": 8_030_261_248,
    "llama-2-7b": 6_738_415_616,
    "qwen2.5-0.5b": 494_032_768,
    "mixtral-8x7b": 46_702_792_704,
    "gemma-3-1b": 999_885_952,
    "gpt2": 124_439_808,
    "bert-base-uncased": 109_514_298,  # BertForMaskedLM (no pooler, MLM head)
    "llama-3.2-1b": 1_235_814_400,
    "smollm2-135m": 134_515_008,
    "qwen1.5-moe-a2.7b": 14_315_784_192,
    "gemma-3-270m": 268_098_176,
    "gemma-3-27b": 27_432_406_640,  # with its SigLIP vision tower (27,009,002,240 text-only at vocab 262,144)
}


@pytest.mark.parametrize("name,total", PUBLISHED_TOTALS.items())
def test_published_totals(name: str, total: int) -> None:
    assert count_params(resolve_model(name)).total_params == total


@pytest.mark.parametrize(
    "name,low,high",
    [
        ("qwen3-30b-a3b", 3.2e9, 3.4e9),  # "30.5B total, 3.3B activated"
        ("qwen3-235b-a22b", 21.5e9, 22.5e9),  # "235B total, 22B activated"
        ("mixtral-8x7b", 12.8e9, 13.0e9),  # "12.9B active parameters"
        ("deepseek-v3", 37.0e9, 38.0e9),  # "671B total, 37B activated"; HF's model has no MTP layer
        ("mixtral-8x22b", 38.5e9, 39.5e9),  # "39B active of 141B"
        ("qwen1.5-moe-a2.7b", 2.6e9, 2.8e9),  # "14.3B total, 2.7B activated"
    ],
)
def test_moe_active_params_match_published_figures(name: str, low: float, high: float) -> None:
    counts = count_params(resolve_model(name))
    assert low <= counts.active_params <= high
    assert counts.active_params < counts.total_params


def test_mixtral_active_params_by_hand() -> None:
    """32 × (attention + 2 norms + router + 2 of 8 SwiGLU experts) + embeddings + head + final norm."""
    h, inter, vocab, kv_dim = 4096, 14336, 32000, 8 * 128
    attention = h * h * 2 + h * kv_dim * 2
    layer = attention + 2 * h + 8 * h + 2 * (3 * h * inter)
    expected = 32 * layer + 2 * vocab * h + h
    assert count_params(resolve_model("mixtral-8x7b")).active_params == expected == 12_879_925_248


def test_dense_models_are_fully_active_and_deepseek_layers_differ() -> None:
    llama = count_params(resolve_model("llama-3.1-8b"))
    assert llama.active_params == llama.total_params and llama.expert_params == 0
    deepseek = count_params(resolve_model("deepseek-v3"))
    dense, moe = deepseek.layer_params[:3], deepseek.layer_params[3:]
    assert len(set(dense)) == 1 and len(set(moe)) == 1 and moe[0] > 10 * dense[0]
    assert deepseek.params_per_layer == moe[0]


def _peft_trainable(spec: ModelSpec, peft_config) -> int:
    from peft import get_peft_model

    return get_peft_model(build_model(spec.config, device="cpu"), peft_config).get_nb_trainable_parameters()[0]


LORA_CASES = [
    ("llama-3.1-8b", None, None),
    ("llama-3.1-8b", ["q_proj", "v_proj"], None),
    ("qwen3-30b-a3b", None, None),  # experts through peft's gate_proj/up_proj/down_proj conversion (rank 2r gate_up)
    ("qwen3-30b-a3b", ["q_proj", "gate"], None),  # the router as a target parameter
    ("mixtral-8x7b", ["q_proj", "k_proj"], ["experts.gate_up_proj"]),
    ("mixtral-8x7b", None, None),
    ("deepseek-v3", None, None),  # dense MLPs lose their LoRA to the conversion, exactly as in peft
    ("deepseek-v2-lite", ["q_proj", "kv_b_proj"], ["experts.down_proj"]),
    ("qwen1.5-moe-a2.7b", None, None),  # shared_expert + shared_expert_gate
    ("phi-3-mini", None, None),
    ("gpt2", None, None),
    ("gpt2", ["c_attn"], None),
    ("pythia-1.4b", None, None),
    ("phi-2", None, None),
    ("bert-base-uncased", None, None),
    ("t5-base", ["q", "v"], None),
]


@pytest.mark.parametrize("name,targets,parameters", LORA_CASES)
def test_lora_count_equals_peft(name: str, targets: list[str] | None, parameters: list[str] | None) -> None:
    from peft import LoraConfig

    spec = small_spec(resolve_model(name).config)
    modules = targets if targets is not None else default_lora_targets(spec)
    expected = _peft_trainable(spec, LoraConfig(r=4, target_modules=modules, target_parameters=parameters))
    ours = count_trainable_params(spec, "lora", lora_r=4, target_modules=targets, lora_target_parameters=parameters)
    assert ours == expected
    assert (
        count_trainable_params(spec, "qlora", lora_r=4, target_modules=targets, lora_target_parameters=parameters)
        == ours
    )


@pytest.mark.parametrize(
    "name", ["llama-3.1-8b", "qwen2.5-0.5b", "gemma-2-2b", "deepseek-v3", "gpt2", "bert-base-uncased", "t5-base"]
)
@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_prompt_and_prefix_counts_equal_peft(name: str, method: str) -> None:
    from peft import PrefixTuningConfig, PromptTuningConfig, TaskType

    spec = small_spec(resolve_model(name).config)
    task = {
        "decoder": TaskType.CAUSAL_LM,
        "encoder": TaskType.FEATURE_EXTRACTION,
        "encoder-decoder": TaskType.SEQ_2_SEQ_LM,
    }
    config_class = PromptTuningConfig if method == "prompt" else PrefixTuningConfig
    expected = _peft_trainable(spec, config_class(task_type=task[spec.kind], num_virtual_tokens=7))
    assert count_trainable_params(spec, method, num_virtual_tokens=7) == expected


def test_prefix_tuning_is_sized_by_kv_heads_under_gqa() -> None:
    spec = resolve_model("llama-3.1-8b")  # 8 KV heads of 128 against hidden 4096
    assert count_trainable_params(spec, "prefix", num_virtual_tokens=20) == 20 * 32 * 2 * 8 * 128


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "llama-3.1-8b"])
def test_freeze_trains_the_last_layers_and_final_norm_and_an_untied_head(name: str) -> None:
    spec = small_spec(resolve_model(name).config)
    model = build_model(spec.config)
    trainable = [*model.model.layers[-2:], model.model.norm]
    if not spec.tie_word_embeddings:
        trainable.append(model.lm_head)  # a tied head is the embedding matrix: it stays frozen
    assert count_trainable_params(spec, "freeze", trainable_layers=2) == sum(numel(m) for m in trainable)


def test_full_trains_everything() -> None:
    spec = resolve_model("qwen3-8b")
    assert count_trainable_params(spec, "full") == count_params(spec).total_params


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"method": "dora"}, "unknown training method 'dora'"),
        ({"method": "lora", "lora_r": 0}, "lora_r must be positive"),
        ({"method": "lora", "target_modules": ["q_proj", "query_key"]}, "query_key match no layer"),
        ({"method": "lora", "target_modules": ["gate_proj"]}, "need up_proj too"),
        ({"method": "freeze", "trainable_layers": 0}, "between 1 and the model's 48 layers"),
        ({"method": "prefix", "num_virtual_tokens": 0}, "num_virtual_tokens must be positive"),
    ],
)
def test_bad_training_arguments_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        count_trainable_params(resolve_model("qwen3-30b-a3b"), **kwargs)


def test_default_lora_targets_name_transformers_modules() -> None:
    assert default_lora_targets(resolve_model("llama-3.1-8b")) == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert default_lora_targets(resolve_model("gpt2")) == ["c_attn", "c_proj", "c_fc"]
    assert default_lora_targets(resolve_model("phi-4")) == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert default_lora_targets(resolve_model("mixtral-8x7b"))[-3:] == ["w1", "w3", "w2"]


def test_counts_follow_raw_config_flags_as_well_as_spec_fields() -> None:
    """attention_bias lives only in the raw config; two specs that differ only there must not share a count."""
    base = resolve_model("llama-2-7b").config
    plain = spec_from_config(base, name="x")
    biased = spec_from_config({**base, "attention_bias": True}, name="x")
    assert count_params(biased).total_params - count_params(plain).total_params == 32 * 4 * 4096


# Families a user may point at from a local folder; not in the catalog, checked at toy size.
FAMILY_CONFIGS = {
    "olmo2": {"architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2", "num_key_value_heads": 2},
    "starcoder2": {"architectures": ["Starcoder2ForCausalLM"], "model_type": "starcoder2", "num_key_value_heads": 2},
    "starcoder2-nobias": {"architectures": ["Starcoder2ForCausalLM"], "model_type": "starcoder2", "use_bias": False},
    "mistral-default-kv": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "num_attention_heads": 16},
    "phi-qk-norm": {"architectures": ["PhiForCausalLM"], "model_type": "phi", "qk_layernorm": True},
    "gpt-neox-nobias": {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "attention_bias": False},
}


@pytest.mark.parametrize("family", FAMILY_CONFIGS)
def test_other_known_families_count_exactly(family: str) -> None:
    sizes = {
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    config = {**sizes, **FAMILY_CONFIGS[family]}
    spec = spec_from_config(config, name=family)
    counts = count_params(spec)
    assert counts.exact and counts.total_params == numel(build_model(config))


def test_vision_language_models_count_the_vision_tower() -> None:
    """Gemma 3 4B+: SigLIP (27 layers, 896 px, patch 14) + projector = 419,980,144 on top of the language model."""
    spec = resolve_model("gemma-3-4b")
    counts = count_params(spec)
    text_only = spec_from_config({**spec.text_config, "architectures": ["Gemma3ForCausalLM"]}, name="text")
    assert counts.total_params - count_params(text_only).total_params == 416_866_032 + 1152 * 2560 + 1152
    assert counts.exact and spec.model_type == "gemma3_text" and spec.num_layers == 34


def test_lora_on_a_vision_language_model_equals_peft() -> None:
    """The default names also reach the SigLIP tower's q/k/v projections, in peft and here."""
    from peft import LoraConfig

    raw = resolve_model("gemma-3-4b").config
    tower = {
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 56,
    }
    small = {
        **raw,
        "text_config": shrink(raw["text_config"]),
        "vision_config": {**raw["vision_config"], **tower},
        "mm_tokens_per_image": 4,
    }
    spec = spec_from_config(small, name="tiny-vlm")
    assert count_params(spec).total_params == numel(build_model(small))
    expected = _peft_trainable(spec, LoraConfig(r=4, target_modules=default_lora_targets(spec)))
    assert count_trainable_params(spec, "lora", lora_r=4) == expected


@pytest.mark.parametrize(
    "name,published", [("gemma-3-4b", 3_880_099_328), ("gemma-3-12b", 11_765_788_416), ("gemma-3-27b", 27_009_002_240)]
)
def test_gemma3_language_models_match_keras_hub_text_only_counts(name: str, published: int) -> None:
    """Keras-Hub publishes the text-only models with the 262,144-token vocabulary (no image tokens)."""
    text = {**resolve_model(name).text_config, "vocab_size": 262_144, "architectures": ["Gemma3ForCausalLM"]}
    assert count_params(spec_from_config(text, name="text")).total_params == published


def test_unknown_architectures_are_flagged_as_estimates() -> None:
    config = {**resolve_model("llama-2-7b").config, "model_type": "brand_new", "architectures": ["BrandNewForCausalLM"]}
    counts = count_params(spec_from_config(config, name="x"))
    assert not counts.exact
    assert counts.total_params == count_params(resolve_model("llama-2-7b")).total_params  # counted as Llama-like
    assert count_params(resolve_model("llama-2-7b")).exact


@pytest.mark.parametrize(
    "name,labels",
    [
        ("llama-3.1-8b", 1),
        ("qwen2.5-0.5b", 1),
        ("qwen3-30b-a3b", 1),
        ("gpt2", 1),
        ("pythia-1.4b", 1),
        ("phi-2", 1),
        ("falcon-180b", 1),
        ("bloom-176b", 1),
        ("bert-base-uncased", 3),
        ("roberta-base", 2),
    ],
)
def test_sequence_classifiers_and_reward_models_count_exactly(name: str, labels: int) -> None:
    """A reward model swaps the LM head for a hidden → num_labels score head (AutoModelForSequenceClassification)."""
    spec = as_sequence_classifier(resolve_model(name), labels)
    assert spec.architecture.endswith("ForSequenceClassification")
    counts = count_params(spec)
    assert counts.total_params == numel(build_model(spec.config))
    assert count_trainable_params(spec, "freeze", trainable_layers=1) == counts.layer_params[-1] + counts.output_params


FUZZ_FAMILIES = [
    "llama-3.1-8b",
    "qwen2.5-0.5b",
    "qwen3-0.6b",
    "qwen3-30b-a3b",
    "mixtral-8x7b",
    "deepseek-v3",
    "gemma-2-2b",
    "gemma-3-1b",
    "phi-3-mini",
    "phi-2",
    "pythia-1.4b",
    "gpt2",
    "bert-base-uncased",
    "t5-base",
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(FUZZ_FAMILIES),
    heads_per_kv=st.sampled_from([1, 2, 4]),
    kv_heads=st.integers(1, 3),
    head_dim=st.sampled_from([8, 16]),
    layers=st.integers(1, 4),
    intermediate=st.integers(1, 12).map(lambda n: 8 * n),
    tie=st.booleans(),
    bias=st.booleans(),
)
def test_random_sizes_of_every_family_count_exactly(
    family: str, heads_per_kv: int, kv_heads: int, head_dim: int, layers: int, intermediate: int, tie: bool, bias: bool
) -> None:
    """Any size, GQA ratio, depth, tying and bias flags: still equal to the meta-device model."""
    heads = heads_per_kv * kv_heads
    config = small_spec(resolve_model(family).config).config
    sizes = {
        "hidden_size": heads * head_dim,
        "n_embd": heads * head_dim,
        "d_model": heads * head_dim,
        "num_attention_heads": heads,
        "n_head": heads,
        "num_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "d_kv": head_dim,
        "num_hidden_layers": layers,
        "n_layer": layers,
        "num_layers": layers,
        "num_decoder_layers": layers,
        "intermediate_size": intermediate,
        "d_ff": intermediate,
        "first_k_dense_replace": min(layers - 1, 1),
    }
    config = {k: sizes.get(k, v) for k, v in config.items()}
    if family in ("gpt2", "bert-base-uncased", "pythia-1.4b", "phi-2"):
        config.pop("num_key_value_heads", None)  # multi-head only
        config.pop("head_dim", None)
    config.update(tie_word_embeddings=tie, attention_bias=bias, mlp_bias=bias)
    spec = spec_from_config(config, name=family)
    assert count_params(spec).total_params == numel(build_model(spec.config))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=st.sampled_from(FUZZ_FAMILIES + ["qwen1.5-moe-a2.7b", "deepseek-v2-lite", "mistral-7b"]), data=st.data())
def test_random_lora_target_subsets_equal_peft(family: str, data) -> None:
    """Any non-empty subset of a family's default targets, at any rank, counts what peft counts."""
    from peft import LoraConfig

    spec = small_spec(resolve_model(family).config)
    targets = default_lora_targets(spec)
    chosen = data.draw(st.lists(st.sampled_from(targets), min_size=1, max_size=len(targets), unique=True))
    rank = data.draw(st.integers(1, 6))
    pairs = {"gate_proj": "up_proj", "up_proj": "gate_proj", "w1": "w3", "w3": "w1"}
    if spec.model_type in ("qwen3_moe", "deepseek_v3", "deepseek_v2", "mixtral"):  # peft fuses these pairs
        chosen = list(dict.fromkeys(chosen + [pairs[t] for t in chosen if t in pairs]))
    expected = _peft_trainable(spec, LoraConfig(r=rank, target_modules=chosen))
    assert count_trainable_params(spec, "lora", lora_r=rank, target_modules=chosen) == expected


@pytest.mark.parametrize("name", ["qwen3-30b-a3b", "mixtral-8x7b", "llama-3.1-8b", "bert-base-uncased"])
def test_all_linear_keyword_equals_peft_and_all_means_the_defaults(name: str) -> None:
    """peft's "all-linear" also adapts a converted MoE router; LLaMA-Factory's "all" is the default list."""
    from peft import LoraConfig

    spec = small_spec(resolve_model(name).config)
    expected = _peft_trainable(spec, LoraConfig(r=4, target_modules="all-linear"))
    assert count_trainable_params(spec, "lora", lora_r=4, target_modules="all-linear") == expected
    assert count_trainable_params(spec, "lora", lora_r=4, target_modules=["all"]) == count_trainable_params(
        spec, "lora", lora_r=4
    )
