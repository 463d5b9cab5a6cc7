"""Layout search: hard constraints, the seed's strategy table, and minimal GPU counts."""

from dataclasses import replace

import pytest

from lmforge.errors import UserInputError
from lmforge.plan.hardware import get_accelerator
from lmforge.plan.layout import LayoutRequest, LayoutSearch, valid_tp_degrees
from lmforge.plan.memory import training_memory
from lmforge.plan.models import resolve_model
from lmforge.plan.params import count_params
from lmforge.plan.setup import InferenceSetup, TrainingSetup

A100 = get_accelerator("a100-80g")


def _search(model: str, setup=None) -> LayoutSearch:
    spec = resolve_model(model)
    return LayoutSearch(spec, setup or TrainingSetup(), count_params(spec).total_params)


def test_tp_degrees_divide_attention_and_kv_heads_and_stay_in_a_node():
    assert valid_tp_degrees(resolve_model("llama-3.1-8b")) == [1, 2, 4, 8]  # 32 heads, 8 KV heads
    assert valid_tp_degrees(resolve_model("qwen2.5-0.5b")) == [1, 2]  # 14 heads, 2 KV heads
    assert valid_tp_degrees(resolve_model("llama-3.1-8b"), gpus_per_node=4) == [1, 2, 4]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (LayoutRequest(tp=3), "TP 3 does not divide 32 attention heads"),
        (LayoutRequest(tp=16), "exceeds one node"),
        (LayoutRequest(pp=40), "PP 40 is more pipeline stages than the 32 layers"),
        (LayoutRequest(gpus=12, tp=8), "12 GPUs cannot be split into TP 8"),
        (LayoutRequest(gpus=0), "positive"),
        (LayoutRequest(zero_stage=2, pp=2), "ZeRO-2 cannot be combined with pipeline parallelism"),
        (LayoutRequest(zero_stage=2, offload="params"), "needs ZeRO-3"),
        (LayoutRequest(zero_stage=0, offload="optimizer"), "ZeRO stage 1, 2 or 3"),
    ],
)
def test_impossible_layouts_are_rejected_naming_the_constraint(request_, message):
    with pytest.raises(UserInputError, match=message):
        _search("llama-3.1-8b").best(A100, request_)


def test_kv_heads_constrain_tp_too():
    with pytest.raises(UserInputError, match="TP 4 does not divide 2 KV heads"):
        _search("qwen2.5-1.5b").best(A100, LayoutRequest(tp=4))  # 12 heads, 2 KV heads


def test_7b_full_on_8_a100_is_plain_data_parallel():
    choice = _search("llama-2-7b").best(A100, LayoutRequest(gpus=8))
    assert choice.fits
    assert (choice.layout.dp, choice.layout.tp, choice.layout.pp) == (8, 1, 1)
    assert choice.layout.zero_stage in (0, 1, 2)
    assert "data parallel" in choice.reason and "\n" not in choice.reason


def test_70b_full_needs_zero3_or_model_parallelism():
    choice = _search("llama-3.1-70b").best(A100)
    assert choice.fits and choice.gpus > 8
    assert choice.layout.zero_stage == 3 or choice.layout.tp * choice.layout.pp > 1


def test_405b_full_uses_tp_8_inside_the_node_and_pp_across_nodes():
    choice = _search("llama-3.1-405b").best(A100)
    assert choice.fits
    assert choice.layout.tp == 8 and choice.layout.pp > 1 and choice.layout.zero_stage <= 1
    assert "3D" in choice.reason


def test_very_long_sequences_get_sequence_parallel():
    choice = _search("llama-3.1-8b", TrainingSetup(seq_len=65536, recompute="full")).best(A100)
    assert choice.fits and choice.layout.tp > 1 and choice.layout.sequence_parallel
    assert "32K" in choice.reason


@pytest.mark.parametrize("model", ["qwen2.5-0.5b", "llama-2-7b", "llama-3.1-70b", "mixtral-8x7b"])
def test_the_recommended_count_fits_with_headroom_and_one_fewer_does_not(model):
    search = _search(model, TrainingSetup(recompute="full"))
    choice = search.best(A100)
    assert choice.fits
    assert choice.memory.total_bytes <= 0.9 * A100.memory_bytes
    assert choice.memory == training_memory(search.spec, search.setup, choice.layout)
    if choice.gpus > 1:
        fewer = search.best(A100, max_gpus=choice.gpus - 1)
        assert not fewer.fits and "does not fit" in fewer.reason


@pytest.mark.parametrize(
    ("model", "setup"),
    [
        ("llama-3.1-70b", TrainingSetup()),
        ("llama-3.1-70b", TrainingSetup(method="lora")),
        ("llama-2-7b", TrainingSetup(micro_batch_size=4, seq_len=4096)),
        ("qwen3-30b-a3b", TrainingSetup(method="qlora", recompute="selective")),
        ("llama-3.1-405b", TrainingSetup(recompute="full")),
    ],
)
def test_a_layout_reported_as_fitting_is_the_one_priced_and_fits(model, setup):
    """Regression: a chosen layout was once relabelled (ZeRO-1 on one rank -> ZeRO-0) after being priced,
    and the relabelled one needed 73.2 GiB of the 72 usable."""
    search = _search(model, setup)
    for card in ("a100-80g", "rtx-4090", "h200"):
        choice = search.best(get_accelerator(card))
        if choice.fits:
            assert choice.memory == training_memory(search.spec, setup, choice.layout)
            assert choice.memory.total_bytes <= choice.usable_bytes


def test_minimal_gpu_count_grows_with_model_size():
    sizes = ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b"]
    counts = [_search(name, TrainingSetup(recompute="full")).best(A100).gpus for name in sizes]
    assert counts == sorted(counts)
    assert counts[0] == 1 and counts[-1] > 8


def test_more_memory_per_gpu_never_needs_more_gpus():
    search = _search("llama-3.1-70b", TrainingSetup(method="lora", recompute="full"))
    cards = ["a100-40g", "a100-80g", "h200", "b200"]
    counts = [search.best(get_accelerator(card)).gpus for card in cards]
    assert counts == sorted(counts, reverse=True)


def test_a_fixed_gpu_count_that_is_too_small_says_how_many_are_needed():
    choice = _search("llama-3.1-70b").best(A100, LayoutRequest(gpus=2))
    assert not choice.fits
    assert "does not fit on 2 × a100-80g" in choice.reason and "needs" in choice.reason


def test_user_fixed_zero_tp_pp_are_honoured():
    search = _search("llama-2-7b")
    choice = search.best(A100, LayoutRequest(gpus=8, zero_stage=3))
    assert choice.layout.zero_stage == 3 and choice.layout.dp == 8
    assert "ZeRO-3 you chose" in choice.reason
    choice = search.best(A100, LayoutRequest(gpus=8, tp=2, pp=2, zero_stage=1))
    assert (choice.layout.dp, choice.layout.tp, choice.layout.pp, choice.layout.zero_stage) == (2, 2, 2, 1)


def test_offload_is_used_only_when_asked_and_moves_states_to_cpu():
    search = _search("llama-2-7b")
    plain = search.best(A100)
    assert not plain.layout.offload_optimizer
    offloaded = search.best(A100, LayoutRequest(offload="optimizer"))
    assert offloaded.layout.offload_optimizer and offloaded.layout.zero_stage >= 1
    assert offloaded.gpus <= plain.gpus and offloaded.memory.cpu_offload_bytes > 0


def test_inference_70b_bf16_needs_two_a100_with_tensor_parallel():
    choice = _search("llama-3.1-70b", InferenceSetup(context_len=4096)).best(A100)
    assert choice.fits and choice.layout.tp == 2 and choice.layout.pp == 1


def test_headroom_is_respected():
    search = _search("llama-2-7b", InferenceSetup())
    tight = replace(A100, memory_gib=15)
    assert search.best(tight, headroom=0.0).gpus <= search.best(tight, headroom=0.5).gpus
    with pytest.raises(UserInputError, match="headroom"):
        search.best(A100, headroom=1.0)


def test_a_long_sequence_that_fits_one_gpu_stays_on_one_gpu():
    choice = _search("qwen2.5-0.5b", TrainingSetup(seq_len=40_000, recompute="full")).best(get_accelerator("h200"))
    assert choice.fits and choice.gpus == 1 and "fits one" in choice.reason


def test_searching_every_card_at_once_gives_each_cards_own_answer():
    from lmforge.plan.hardware import list_accelerators

    cards = list_accelerators()
    together = _search("mixtral-8x7b", TrainingSetup(recompute="full")).best_for_each(cards)
    alone = _search("mixtral-8x7b", TrainingSetup(recompute="full"))
    for card in cards:
        assert together[card.name].layout == alone.best(card).layout, card.name


def test_uneven_pipeline_stages_are_priced_by_the_fullest_stage():
    """32 layers on 5 stages (7, 7, 6, 6, 6 as DeepSpeed's uniform partition cuts them): each GPU is
    priced for 7 layers, between the 8 of PP 4 and the 4 of PP 8."""
    from lmforge.plan.setup import Layout

    search = _search("llama-3.1-8b", TrainingSetup(grad_accum=8))  # 1F1B: the first stage holds the most
    weights = {pp: search.memory(Layout(pp=pp))["weights"] for pp in (4, 5, 8)}
    assert weights[8] < weights[5] < weights[4]
    layer_bytes = (weights[4] - weights[8]) / 4  # the first stage adds the embedding on top of its layers
    assert weights[5] == pytest.approx(weights[8] + 3 * layer_bytes)


def test_a_prime_layer_count_still_gets_a_pipeline():
    """DeepSeek-V3 has 61 layers: PP 2-32 (uneven stages) are searched, not only 1 and 61."""
    from lmforge.plan.layout import pipeline_degrees

    assert pipeline_degrees(61) == [1, 2, 4, 8, 16, 32, 61]
    assert pipeline_degrees(32) == [1, 2, 4, 8, 16, 32]
    assert pipeline_degrees(80) == [1, 2, 4, 5, 8, 10, 16, 20, 32, 40, 64, 80]
    choice = _search("deepseek-v3").best(get_accelerator("h100-sxm"), LayoutRequest(pp=8, tp=8))
    assert choice.fits and choice.layout.pp == 8


# ---- defect 1: one search over every layout, so the fewest GPUs really are the fewest


def _fewest_priced(search: LayoutSearch, card) -> int:
    """Brute force over the search's own candidates: the smallest count at which any shape fits."""
    counts = search.fitting_counts(card)
    return min(counts.values())


@pytest.mark.parametrize(
    ("model", "setup", "card"),
    [
        ("llama-3.1-405b", TrainingSetup(recompute="full"), "h100-sxm"),  # answered 112 where ZeRO-3 needed 96
        ("deepseek-v3", TrainingSetup(recompute="full"), "a100-80g"),  # 244 vs 152
        ("mixtral-8x22b", TrainingSetup(method="lora", recompute="full"), "h100-sxm"),  # 8 vs 6
        ("qwen3-235b-a22b", TrainingSetup(recompute="full"), "h100-sxm"),  # 64 vs 52
        ("smollm2-360m", TrainingSetup(seq_len=65536), "h200"),  # TP 5 on 5 vs ZeRO-2 on 2
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_the_chosen_layout_has_the_fewest_gpus_of_every_layout_priced(model, setup, card):
    search = _search(model, setup)
    accelerator = get_accelerator(card)
    choice = search.best(accelerator)
    assert choice.fits and choice.gpus == _fewest_priced(search, accelerator)
    for zero in (0, 1, 2, 3):  # what a user fixing the ZeRO stage finds is never fewer
        fixed = search.best(accelerator, LayoutRequest(zero_stage=zero))
        assert not fixed.fits or fixed.gpus >= choice.gpus, zero


def test_sequence_parallelism_is_not_switched_on_at_32k_tokens():
    """143 of 351 sweeps jumped at 32,768 -> 32,769 tokens (16 GPUs, then 8): SP now comes with every TP layout."""
    card = get_accelerator("a100-80g")
    counts = [_search("llama-3.1-8b", TrainingSetup(seq_len=n)).best(card).gpus for n in (32_768, 32_769)]
    assert counts[0] <= counts[1]
    tp_layout = _search("llama-3.1-8b", TrainingSetup(seq_len=4096)).best(card, LayoutRequest(tp=2))
    assert tp_layout.layout.sequence_parallel


def test_layouts_lmforge_train_cannot_run_name_the_engine_they_need():
    from lmforge.plan.layout import engine_needed
    from lmforge.plan.setup import Layout

    assert engine_needed(Layout(dp=8, zero_stage=3)) is None
    assert "Megatron-LM" in engine_needed(Layout(tp=8, pp=4, dp=2, sequence_parallel=True))
    assert "expert" in engine_needed(Layout(dp=4, ep=4))
    qlora = TrainingSetup(method="qlora")
    assert "refuses" in engine_needed(Layout(dp=4, zero_stage=3), qlora)  # lmforge train refuses FSDP/ZeRO-3 QLoRA
    choice = _search("llama-3.1-405b").best(A100)
    assert "Megatron-LM" in choice.reason  # a 3D answer says lmforge train cannot drive it


def test_at_equal_count_the_layout_lmforge_train_runs_comes_first():
    search = _search("llama-2-7b", TrainingSetup(method="qlora", recompute="full"))
    choice = search.best(A100, LayoutRequest(gpus=4))
    assert choice.fits and choice.layout.zero_stage != 3 and choice.layout.tp == choice.layout.pp == 1


def test_a_pipeline_fed_one_micro_batch_says_what_its_bubble_costs():
    choice = _search("llama-3.1-70b").best(A100, LayoutRequest(pp=4, tp=8))
    assert choice.fits and "idles 75% of the time" in choice.reason and "--grad-accum 16" in choice.reason
    fed = _search("llama-3.1-70b", TrainingSetup(grad_accum=16)).best(A100, LayoutRequest(pp=4, tp=8))
    assert "idles" not in fed.reason


def test_expert_parallelism_splits_the_experts_over_ep_ranks():
    from lmforge.plan.setup import Layout

    search = _search("mixtral-8x7b", TrainingSetup(method="full", recompute="full"))
    plain, split = search.memory(Layout(dp=8, zero_stage=1)), search.memory(Layout(dp=8, ep=8, zero_stage=1))
    expert_weights = count_params(search.spec).expert_params
    assert plain["weights"] - split["weights"] == pytest.approx(
        2 * expert_weights * (1 - 1 / 8), rel=1e-3
    )  # bf16 (ZeRO mixed)
    with pytest.raises(UserInputError, match="dense"):
        _search("llama-3.1-8b").best(A100, LayoutRequest(ep=2))
    with pytest.raises(UserInputError, match="EP 3 does not divide the 8 experts"):
        search.best(A100, LayoutRequest(ep=3))


# ---- defect 9 and 8: inference weighs speed, and never lays a model out over data-parallel ranks


def test_405b_fp8_serving_is_one_node_with_tp_8_not_tp_2_pp_3():
    search = _search("llama-3.1-405b", InferenceSetup(weight_format="fp8"))
    choice = search.best(get_accelerator("h100-sxm"))
    assert (choice.layout.tp, choice.layout.pp, choice.layout.gpus) == (8, 1, 8)
    assert "fastest decode per GPU" in choice.reason


def test_an_inference_layout_that_does_not_fit_has_no_data_parallel_ranks():
    choice = _search("llama-3.1-405b", InferenceSetup()).best(get_accelerator("t4"), max_gpus=16)
    assert not choice.fits and choice.layout.dp == 1
