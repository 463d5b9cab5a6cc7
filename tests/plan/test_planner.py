"""The planner API: the stable JSON, the verdict table, and the figures joined up end to end."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import NotFoundError, UserInputError
from lmforge.plan import plan_inference, plan_training
from lmforge.plan.hardware import get_accelerator, list_accelerators
from lmforge.plan.layout import LayoutSearch
from lmforge.plan.memory import training_memory
from lmforge.plan.models import resolve_model
from lmforge.plan.params import count_params, count_trainable_params
from lmforge.plan.quant import FORMATS
from lmforge.plan.rules import NOMINAL_BYTES_PER_WEIGHT
from lmforge.plan.setup import WEIGHT_FORMATS, Layout, TrainingSetup

STABLE_KEYS = {
    "model": {"name", "params_total", "params_active", "params_trainable"},
    "memory": {"per_gpu_bytes", "breakdown"},
    "layout": {"gpus", "dp", "tp", "pp", "zero_stage"},
}


@pytest.fixture(scope="module")
def lora_70b():
    return plan_training("llama-3.1-70b", method="lora", gpu="a100-80g", recompute="full")


@pytest.mark.parametrize("weight_format", WEIGHT_FORMATS)
def test_every_weight_format_a_user_can_choose_plans(weight_format):
    """Each --quant choice has its real bits per weight (plan/quant.py) and a nominal width for the rules of
    thumb (plan/rules.py): torchao-int4 was offered with neither rule entry and ended in a KeyError."""
    plan = plan_inference("qwen2.5-0.5b", weight_format=weight_format, context_len=256, gpu="rtx-4090", verdicts=False)
    assert plan.to_dict()["setup"]["weight_format"] == weight_format and plan.to_dict()["rules_of_thumb"]
    assert set(WEIGHT_FORMATS) == set(FORMATS) == set(NOMINAL_BYTES_PER_WEIGHT)


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
    assert lora_70b.model.params_trainable == count_trainable_params(spec, "lora", lora_r=8)  # method.lora_r's default
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
    assert pulled.setup.micro_batch_size * pulled.setup.grad_accum == 8  # the step keeps its 8 sequences


def test_the_common_question_qlora_8b_on_a_4090_is_one_card_with_checkpointing():
    """Every LoRA/QLoRA recipe (LLaMA-Factory, unsloth, axolotl, torchtune) turns gradient checkpointing on;
    the planner's default does too, so the answer is one RTX 4090, not 2 with tensor parallelism."""
    plan = plan_training("llama-3.1-8b", method="qlora", gpu="rtx-4090", verdicts=False)
    assert plan.fits and plan.layout.gpus == 1 and plan.layout.tp == 1
    assert plan.setup.recompute == "full"
    assert any("gradient checkpointing is on" in note for note in plan.notes)
    off = plan_training("llama-3.1-8b", method="qlora", gpu="rtx-4090", recompute="none", verdicts=False)
    assert off.setup.recompute == "none"  # an explicit choice is honoured


# ---- defect 7: the model's own limits and kind


def test_a_sequence_past_learned_positions_is_refused():
    with pytest.raises(UserInputError, match="1,024 learned positions"):
        plan_training("gpt2", seq_len=100_000, verdicts=False)


def test_serving_past_the_context_is_refused_and_training_past_it_is_warned():
    with pytest.raises(UserInputError, match="beyond llama-3.1-8b's 131,072-token context"):
        plan_inference("llama-3.1-8b", context_len=1_000_000, verdicts=False)
    stretched = plan_training("qwen2.5-0.5b", seq_len=65_536, gpu="h200", verdicts=False)
    assert any("RoPE scaling" in note for note in stretched.notes)


def test_an_encoder_has_no_kv_cache_and_no_decode():
    plan = plan_inference("bert-base-uncased", context_len=512, verdicts=False)
    assert plan.memory["kv_cache"] == 0
    assert plan.throughput.decode_tokens_per_second is None and plan.throughput.prefill_seconds is not None
    assert any("encoder" in note for note in plan.notes)


# ---- defect 8: plans that do not fit, odd inputs


def test_a_plan_that_does_not_fit_has_no_time_or_cost():
    plan = plan_training("llama-3.1-70b", gpu="rtx-4090", gpus=2, verdicts=False, levers=False)
    assert not plan.fits
    assert plan.throughput.wall_seconds is None and plan.throughput.cost_usd is None
    served = plan_inference("llama-3.1-405b", gpu="rtx-4090", gpus=2, verdicts=False)
    assert not served.fits and served.throughput.decode_tokens_per_second is None


def test_an_infinite_custom_memory_is_a_user_error():
    with pytest.raises(UserInputError, match="finite"):
        plan_training("llama-2-7b", gpu_mem_gib=float("inf"), verdicts=False)


# ---- defect 9 and serving fleets


def test_405b_fp8_on_h100s_is_served_by_one_tp8_node_about_4x_faster_than_tp2_pp3():
    plan = plan_inference("llama-3.1-405b", weight_format="fp8", gpu="h100-sxm", verdicts=False)
    assert (plan.layout.tp, plan.layout.pp) == (8, 1)
    pipelined = plan_inference("llama-3.1-405b", weight_format="fp8", gpu="h100-sxm", tp=2, pp=3, verdicts=False)
    ratio = plan.throughput.decode_tokens_per_second / pipelined.throughput.decode_tokens_per_second
    assert 3.5 < ratio < 4.5


def test_a_small_quantized_model_gets_replicas_per_gpu_and_a_fleet_for_a_request_rate():
    """The tutorials: an int8 7B (7 GB) serves three times on one RTX 4090 (24 GB); with each replica's own CUDA
    context and the 10 % headroom two fit, with no headroom three."""
    shape = dict(weight_format="int8", gpu="rtx-4090", context_len=512, prompt_len=384, verdicts=False)
    plan = plan_inference("llama-2-7b", target_requests_per_second=50, **shape)
    assert plan.replicas.per_gpu == 2 and plan.replicas.per_node == 16
    assert plan.replicas.replicas_needed == math.ceil(50 / plan.replicas.requests_per_second_per_replica)
    assert plan.replicas.gpus_needed == math.ceil(plan.replicas.replicas_needed / 2)
    assert plan_inference("llama-2-7b", headroom=0.0, **shape).replicas.per_gpu == 3
    with pytest.raises(UserInputError, match="--prompt-len"):
        plan_inference("llama-2-7b", target_requests_per_second=5, verdicts=False)


# ---- the property sweep: models x methods x sizes

SWEEP_MODELS = (
    "qwen2.5-0.5b",
    "gemma-3-1b",
    "llama-3.2-1b",
    "llama-2-7b",
    "qwen3-30b-a3b",
    "deepseek-v2-lite",
    "llama-3.1-70b",
)


@settings(max_examples=30, deadline=None)
@given(
    model=st.sampled_from(SWEEP_MODELS),
    method=st.sampled_from(["full", "freeze", "lora", "qlora", "prompt", "prefix"]),
    precision=st.sampled_from(["bf16-mixed", "bf16", "fp32"]),
    recompute=st.sampled_from(["none", "full"]),
    loss=st.sampled_from(["standard", "chunked"]),
    seq_len=st.sampled_from([256, 2048, 8192]),
    micro_batch=st.sampled_from([1, 4]),
    card=st.sampled_from(["rtx-4090", "a100-80g", "h200"]),
)
def test_every_plan_is_consistent_monotone_and_on_the_fewest_gpus(
    model, method, precision, recompute, loss, seq_len, micro_batch, card
):
    spec = resolve_model(model)
    setup = TrainingSetup(
        method=method,
        precision=precision,
        recompute=recompute,
        loss=loss,
        seq_len=seq_len,
        micro_batch_size=micro_batch,
    )
    search = LayoutSearch(spec, setup, count_params(spec).total_params)
    accelerator = get_accelerator(card)
    choice = search.best(accelerator)
    # Non-negative terms that sum to the total, on the chosen layout and on one GPU.
    for memory in (choice.memory, training_memory(spec, setup, Layout())):
        assert all(value >= 0 for value in memory.bytes_by_category.values())
        assert sum(memory.bytes_by_category.values()) == memory.total_bytes
        assert memory.cpu_offload_bytes >= 0
    # The chosen layout has the fewest GPUs of every layout the planner can price.
    counts = search.fitting_counts(accelerator)
    assert choice.fits == bool(counts)
    if choice.fits:
        assert choice.gpus == min(counts.values())
        assert choice.memory.total_bytes <= choice.usable_bytes
    # Monotone: a longer sequence or a bigger micro-batch never needs less memory, nor fewer GPUs.
    longer = TrainingSetup(**{**setup.__dict__, "seq_len": 2 * seq_len})
    bigger = TrainingSetup(**{**setup.__dict__, "micro_batch_size": 2 * micro_batch})
    for grown in (longer, bigger):
        assert training_memory(spec, grown, Layout()).total_bytes >= training_memory(spec, setup, Layout()).total_bytes
        grown_choice = LayoutSearch(spec, grown, count_params(spec).total_params).best(accelerator)
        assert not choice.fits or not grown_choice.fits or grown_choice.gpus >= choice.gpus
    # More data-parallel ranks never hold more per GPU under ZeRO; recomputation adds at most the block inputs
    # it checkpoints (freeze tuning of one layer recomputes nothing it would not have kept anyway).
    for zero in (1, 2, 3):
        per_gpu = [training_memory(spec, setup, Layout(dp=dp, zero_stage=zero)).total_bytes for dp in (1, 2, 8)]
        assert per_gpu == sorted(per_gpu, reverse=True)
    if recompute == "none":
        full = training_memory(spec, TrainingSetup(**{**setup.__dict__, "recompute": "full"}), Layout())
        plain = training_memory(spec, setup, Layout())
        block_inputs = spec.num_layers * 4 * spec.hidden_size * seq_len * micro_batch
        assert full.total_bytes - full["overhead"] <= plain.total_bytes - plain["overhead"] + block_inputs


def test_plan_task_is_the_commands_twin_with_its_defaults_and_checks():
    from lmforge.plan.planner import plan_task

    with pytest.raises(UserInputError, match="training-only options given with --task infer: --zero, --simulate"):
        plan_task("llama-3.2-1b", "infer", zero=2, simulate=True)
    served = plan_task("llama-3.2-1b", "infer", precision="fp16-mixed", verdicts=False)
    assert (served.setup.weight_format, served.setup.kv_dtype) == ("fp16", "fp16")  # the precision's half type
    qlora = plan_task("llama-3.2-1b", method="qlora", quant="int8", verdicts=False, levers=False)
    assert qlora.setup.quant_bits == 8 and qlora.setup.seq_len == 2048
