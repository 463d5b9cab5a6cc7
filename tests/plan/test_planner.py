"""The planner API: the stable JSON, the verdict table, and the figures joined up end to end."""

import json

import pytest

from lmforge.errors import NotFoundError, UserInputError
from lmforge.plan import plan_inference, plan_training
from lmforge.plan.hardware import list_accelerators
from lmforge.plan.params import count_trainable_params
from lmforge.plan.models import resolve_model

STABLE_KEYS = {
    "model": {"name", "params_total", "params_active", "params_trainable"},
    "memory": {"per_gpu_bytes", "breakdown"},
    "layout": {"gpus", "dp", "tp", "pp", "zero_stage"},
}


@pytest.fixture(scope="module")
def lora_70b():
    return plan_training("llama-3.1-70b", method="lora", gpu="a100-80g", recompute="full")


def test_json_has_the_stable_keys_and_round_trips(lora_70b):
    data = json.loads(json.dumps(lora_70b.to_dict()))
    for section, keys in STABLE_KEYS.items():
        assert keys <= set(data[section]), section
    assert {"throughput", "rules_of_thumb", "verdicts"} <= set(data)
    breakdown = data["memory"]["breakdown"]
    assert {"weights", "gradients", "optimizer_states", "activations"} <= set(breakdown)
    assert sum(breakdown.values()) == data["memory"]["per_gpu_bytes"]
    layout = data["layout"]
    assert layout["dp"] * layout["tp"] * layout["pp"] == layout["gpus"]


def test_trainable_params_are_the_lora_count(lora_70b):
    spec = resolve_model("llama-3.1-70b")
    assert lora_70b.model.params_trainable == count_trainable_params(spec, "lora", lora_rank=16)
    assert lora_70b.model.params_total == 70_553_706_496


def test_verdict_table_covers_every_catalog_gpu_and_bigger_cards_need_fewer(lora_70b):
    verdicts = {v.gpu: v for v in lora_70b.verdicts}
    assert set(verdicts) == {a.name for a in list_accelerators()}
    assert verdicts["a100-80g"].min_gpus == lora_70b.layout.gpus
    assert verdicts["h200"].min_gpus <= verdicts["a100-80g"].min_gpus <= verdicts["a100-40g"].min_gpus
    assert verdicts["h100-sxm"].hours < verdicts["a100-80g"].hours  # same count, faster card


def test_cheapest_card_is_the_verdict_with_the_lowest_cost(lora_70b):
    costs = {v.gpu: v.cost_usd for v in lora_70b.verdicts if v.cost_usd is not None}
    assert lora_70b.cheapest.gpu == min(costs, key=costs.get)
    assert lora_70b.to_dict()["cheapest_gpu"] == lora_70b.cheapest.gpu


def test_time_and_cost_follow_tokens_and_price():
    base = plan_training("qwen2.5-0.5b", gpu="h100-sxm", tokens=10**9, price_per_gpu_hour=2.0, verdicts=False)
    double = plan_training("qwen2.5-0.5b", gpu="h100-sxm", tokens=2 * 10**9, price_per_gpu_hour=2.0, verdicts=False)
    assert double.throughput.wall_seconds == pytest.approx(2 * base.throughput.wall_seconds)
    assert base.throughput.cost_usd == pytest.approx(base.throughput.gpu_hours * 2.0)
    default_price = plan_training("qwen2.5-0.5b", gpu="h100-sxm", verdicts=False)
    assert default_price.throughput.price_usd_per_gpu_hour == 2.99  # the catalog's typical price
    assert any("1e9 training tokens" in note for note in default_price.notes)
    assert default_price.throughput.tokens == 10**9
    assert not any("1e9 training tokens" in note for note in base.notes)  # said only when defaulted


def test_fixed_gpus_too_few_still_returns_the_breakdown_with_a_verdict():
    plan = plan_training("llama-3.1-70b", gpu="rtx-4090", gpus=2, verdicts=False)
    assert not plan.fits and plan.layout.gpus == 2
    assert plan.memory.total_bytes > plan.choice.usable_bytes
    assert "needs" in plan.choice.reason


def test_custom_gpu_memory_changes_the_fit():
    small = plan_training("llama-2-7b", method="qlora", gpu_mem_gib=8, verdicts=False)
    big = plan_training("llama-2-7b", method="qlora", gpu_mem_gib=48, verdicts=False)
    assert small.accelerator.memory_gib == 8 and small.throughput.wall_seconds is None
    assert big.layout.gpus == 1 and small.layout.gpus >= big.layout.gpus


def test_inference_plan_decode_bound_llama2_7b_fp16_a100():
    plan = plan_inference("llama-2-7b", weight_format="fp16", kv_dtype="fp16", context_len=256, gpu="a100-80g")
    assert plan.layout.gpus == 1 and plan.fits
    # 2039 GB/s over 13.5 GB of weights (plus a 256-token KV cache): about 150 tokens/s
    assert 140 < plan.throughput.decode_tokens_per_second < 152
    rule = plan.rules_of_thumb[0]
    assert rule.value == pytest.approx(2 * 6_738_415_616)


def test_inference_verdicts_give_each_cards_decode_bound():
    plan = plan_inference("llama-2-7b", context_len=256)
    verdicts = {v.gpu: v for v in plan.verdicts}
    assert verdicts["a100-80g"].decode_tokens_per_second == pytest.approx(plan.throughput.decode_tokens_per_second)
    assert verdicts["h100-sxm"].decode_tokens_per_second > verdicts["a100-80g"].decode_tokens_per_second
    assert all(v.hours is None for v in plan.verdicts)


def test_moe_decode_reads_only_active_experts():
    moe = plan_inference("qwen3-30b-a3b", gpu="h100-sxm", context_len=256, verdicts=False)
    dense = plan_inference("qwen3-32b", gpu="h100-sxm", context_len=256, verdicts=False)
    assert moe.model.params_active < moe.model.params_total / 5
    assert moe.throughput.decode_tokens_per_second > 4 * dense.throughput.decode_tokens_per_second


def test_quantised_inference_needs_fewer_gpus():
    bf16 = plan_inference("llama-3.1-70b", gpu="rtx-4090", verdicts=False)
    int4 = plan_inference("llama-3.1-70b", weight_format="Q4_K_M", gpu="rtx-4090", verdicts=False)
    assert int4.layout.gpus < bf16.layout.gpus


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(NotFoundError, match="llama"):
        plan_training("llama-9-7b")
    with pytest.raises(UserInputError, match="micro_batch_size"):
        plan_training("llama-2-7b", micro_batch_size=0)
    with pytest.raises(UserInputError, match="tokens"):
        plan_training("llama-2-7b", tokens=-5)
    with pytest.raises(UserInputError, match="TP 3"):
        plan_inference("llama-2-7b", tp=3)


def test_plan_says_when_recomputation_saves_gpus_or_makes_it_fit():
    shape = dict(gpu="a100-80g", micro_batch_size=8, seq_len=4096, verdicts=False, loss="standard", levers=False)
    plain = plan_training("llama-3.1-8b", recompute="none", **shape)  # the user turned it off: only a note
    recomputed = plan_training("llama-3.1-8b", recompute="full", **shape)
    assert recomputed.layout.gpus < plain.layout.gpus
    assert any(f"needs {recomputed.layout.gpus} GPUs instead of {plain.layout.gpus}" in note for note in plain.notes)
    fixed = plan_training("llama-3.1-8b", recompute="none", gpus=recomputed.layout.gpus, **shape)
    assert not fixed.fits and any("--grad-ckpt full it fits" in note for note in fixed.notes)


def test_levers_left_open_are_pulled_before_gpus_are_added_and_each_is_named_with_its_cost():
    shape = dict(gpu="a100-80g", micro_batch_size=8, seq_len=4096, verdicts=False)
    untouched = plan_training("llama-3.1-8b", recompute="none", loss="standard", levers=False, **shape)
    pulled = plan_training("llama-3.1-8b", **shape)
    assert pulled.layout.gpus < untouched.layout.gpus
    assert pulled.levers and all(lever.cost for lever in pulled.levers)
    assert any(note.startswith("lever pulled:") for note in pulled.notes)
    assert [lever["setting"] for lever in pulled.to_dict()["levers"]] == [lever.setting for lever in pulled.levers]
    # What was pulled is what was planned: the setup carries the levers' settings.
    settings = " ".join(lever.setting for lever in pulled.levers)
    assert (pulled.setup.recompute == "full") == ("--grad-ckpt full" in settings)
    assert (pulled.setup.loss == "chunked") == ("--loss chunked" in settings)
    assert pulled.setup.micro_batch_size * pulled.setup.grad_accum_steps == 8  # the step keeps its 8 sequences


def test_the_common_question_qlora_8b_on_a_4090_is_one_card_with_checkpointing():
    """Every LoRA/QLoRA recipe (LLaMA-Factory, unsloth, axolotl, torchtune) turns gradient checkpointing on;
    the planner's default does too, so the answer is one RTX 4090, not 2 with tensor parallelism."""
    plan = plan_training("llama-3.1-8b", method="qlora", gpu="rtx-4090", verdicts=False)
    assert plan.fits and plan.layout.gpus == 1 and plan.layout.tp == 1
    assert plan.setup.recompute == "full"
    assert any("gradient checkpointing is on" in note for note in plan.notes)
    off = plan_training("llama-3.1-8b", method="qlora", gpu="rtx-4090", recompute="none", verdicts=False)
    assert off.setup.recompute == "none"  # an explicit choice is honoured
