"""Methods: the trainable/total count printed at start equals the planner's prediction; freeze trains
only the last layers and the head."""

from __future__ import annotations

import pytest

from lmforge.train.config import MethodSection
from lmforge.train.methods import LORA_TARGETS, apply_method, count_params


def _tiny(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir)


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "prompt", "prefix"])
def test_trainable_count_equals_planner(method, tiny_llama_dir):
    from lmforge.plan.models import resolve_model
    from lmforge.plan.params import count_params as planned_total
    from lmforge.plan.params import count_trainable_params

    section = MethodSection(name=method, lora_r=8, trainable_layers=1, num_virtual_tokens=5)
    counted = count_params(apply_method(_tiny(tiny_llama_dir), section, "causal"))
    spec = resolve_model(str(tiny_llama_dir))
    assert counted.trainable_params == count_trainable_params(
        spec, method, lora_rank=8, lora_targets=LORA_TARGETS["llama"], freeze_last_n=1, num_virtual_tokens=5)
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
    assert wrapped == set(LORA_TARGETS["llama"])


def test_auto_fit_takes_micro_batch_and_accumulation_from_the_planner(make_config):
    import json

    import yaml

    from lmforge.train.run import run_training

    config = make_config("sft", "lora", train={"auto_fit": True, "target_gpu": "A100-80GB", "global_batch_size": 8,
                                               "micro_batch_size": 1, "grad_accum": 8, "max_steps": 1})
    result = run_training(config, progress=False)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())["train"]
    assert (saved["micro_batch_size"], saved["grad_accum"], saved["gradient_checkpointing"]) == (8, 1, False)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["planner"]["memory"]["per_gpu_bytes"] > 0
    assert plan["actual"]["trainable_params"] == plan["planner"]["model"]["params_trainable"]
