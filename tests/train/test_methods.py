"""Methods: the trainable/total count printed at start equals the planner's prediction; freeze trains
only the last layers and the head."""

from __future__ import annotations

import pytest

from lmforge.train.config import MethodSection
from lmforge.train.methods import apply_method, count_model_params

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir)


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "prompt", "prefix"])
def test_trainable_count_equals_planner(method, tiny_llama_dir):
    from lmforge.plan.models import resolve_model
    from lmforge.plan.params import count_params as planned_total
    from lmforge.plan.params import count_trainable_params

    section = MethodSection(name=method, lora_r=8, trainable_layers=1, num_virtual_tokens=5)
    counted = count_model_params(apply_method(_tiny(tiny_llama_dir), section, "causal"))
    spec = resolve_model(str(tiny_llama_dir))
    assert counted.trainable_params == count_trainable_params(
        spec, method, lora_r=8, target_modules=LLAMA_LINEAR, trainable_layers=1, num_virtual_tokens=5
    )
    base_total = counted.total_params - (counted.trainable_params if method not in ("full", "freeze") else 0)
    assert base_total == planned_total(spec).total_params


def test_freeze_trains_last_layers_final_norm_and_head_only(tiny_llama_dir):
    model = apply_method(_tiny(tiny_llama_dir), MethodSection(name="freeze", trainable_layers=1), "causal")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(name.startswith("model.layers.1.") for name in trainable)
    assert not any(name.startswith("model.layers.0.") for name in trainable)
    assert {"model.norm.weight", "lm_head.weight"} <= trainable
    assert "model.embed_tokens.weight" not in trainable


def test_freeze_rejects_more_layers_than_the_model_has(tiny_llama_dir):
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match="has 2 layers"):
        apply_method(_tiny(tiny_llama_dir), MethodSection(name="freeze", trainable_layers=3), "causal")


def test_lora_default_targets_cover_attention_and_mlp(tiny_llama_dir):
    model = apply_method(_tiny(tiny_llama_dir), MethodSection(name="lora"), "causal")
    wrapped = {name.split(".")[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == set(LLAMA_LINEAR)


def test_auto_fit_takes_micro_batch_and_accumulation_from_the_planner(make_config):
    import json

    import yaml

    from lmforge.train.run import run_training

    config = make_config(
        "sft",
        "lora",
        train={
            "auto_fit": True,
            "target_gpu": "A100-80GB",
            "global_batch_size": 8,
            "micro_batch_size": 1,
            "grad_accum": 8,
            "max_steps": 1,
        },
    )
    result = run_training(config, progress=False)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())["train"]
    assert (saved["micro_batch_size"], saved["grad_accum"], saved["gradient_checkpointing"]) == (8, 1, False)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["planner"]["memory"]["per_gpu_bytes"] > 0
    assert plan["actual"]["trainable_params"] == plan["planner"]["model"]["params_trainable"]


# One catalog model per causal-LM family transformers builds tiny on a CPU.
_FAMILIES = [
    "llama-3.2-1b",
    "qwen2.5-0.5b",
    "qwen3-0.6b",
    "mistral-7b",
    "gemma-2b",
    "gemma-2-2b",
    "gemma-3-1b",
    "phi-3-mini",
    "phi-2",
    "pythia-1.4b",
    "gpt2",
    "stablelm-2-1.6b",
    "mixtral-8x7b",
    "qwen3-30b-a3b",
    "qwen1.5-moe-a2.7b",
    "deepseek-v2-lite",
    "deepseek-v3",
    "bloom-176b",
]


@pytest.mark.parametrize("method", ["lora", "freeze", "full"])
@pytest.mark.parametrize("name", _FAMILIES)
def test_planned_trainable_count_equals_training_for_every_family(name, method):
    """plan.json's trainable count (the planner, from the run's config) is what peft / requires_grad train,
    with the method's defaults: LoRA's default targets are one definition (MoE experts in, router out)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmforge.plan.models import resolve_model
    from lmforge.train.config import validate_config
    from lmforge.train.planning import plan_run
    from tests.plan.conftest import shrink

    raw = shrink(resolve_model(name).config)
    model_config = AutoConfig.for_model(**raw)
    # peft adapts MoE experts only without dropout (see the next test).
    method_keys = {"name": method, "lora_r": 4, "trainable_layers": 1, "lora_dropout": 0.0}
    config = validate_config({"model": {"path": name}, "method": method_keys, "data": {"max_len": 64}})
    torch.manual_seed(0)
    trained = count_model_params(apply_method(AutoModelForCausalLM.from_config(model_config), config.method, "causal"))
    planned = plan_run(config, model_config)
    assert "error" not in planned, planned
    assert planned["model"]["params_trainable"] == trained.trainable_params


def test_lora_on_moe_experts_with_dropout_is_a_config_error():
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmforge.errors import ConfigError
    from lmforge.plan.models import resolve_model
    from tests.plan.conftest import shrink

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**shrink(resolve_model("mixtral-8x7b").config)))
    with pytest.raises(ConfigError, match="method.lora_dropout=0"):
        apply_method(model, MethodSection(name="lora", lora_dropout=0.05), "causal")
