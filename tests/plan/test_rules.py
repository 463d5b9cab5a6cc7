"""The tutorials' rules of thumb (plan/rules.py), reproducing their worked examples digit for digit.

Tests named test_seed_* reproduce the tables of the five tutorial articles lmforge started from ("seeds", not in
this repository); docs/plan.md quotes each one beside the planner's figure.
"""

import pytest

from lmforge.plan.rules import (
    NOMINAL_BYTES_PER_WEIGHT,
    full_finetune_rule_bytes,
    gpus_needed_rule,
    inference_rule_bytes,
    lora_rule_bytes,
    model_states_rule_bytes,
    training_rules,
)

GIB = 1024**3


def test_seed_inference_examples_7b():
    # 7B -> bf16 14 GB, int8 7 GB, int4 3.5 GB, fp32 28 GB
    assert inference_rule_bytes(7e9, NOMINAL_BYTES_PER_WEIGHT["bf16"]) == 14e9
    assert inference_rule_bytes(7e9, NOMINAL_BYTES_PER_WEIGHT["int8"]) == 7e9
    assert inference_rule_bytes(7e9, NOMINAL_BYTES_PER_WEIGHT["int4"]) == 3.5e9
    assert inference_rule_bytes(7e9, NOMINAL_BYTES_PER_WEIGHT["fp32"]) == 28e9


def test_seed_gpu_count_examples():
    # 7 × 18 × 1.25 / 24 ≈ 7 RTX 4090; / 40 ≈ 4 A100-40G
    assert gpus_needed_rule(7e9, 24) == 7
    assert gpus_needed_rule(7e9, 40) == 4


def test_seed_model_states_example():
    # (2 + 2 + 12) × 7e9 = 112e9 bytes ≈ 104 GiB
    assert model_states_rule_bytes(7e9) == 112e9
    assert model_states_rule_bytes(7e9) / GIB == pytest.approx(104.3, abs=0.05)


def test_seed_full_finetune_example():
    # 7B fp16 -> 70 GB before activations, ~90 GB with ~20 GB of activations
    assert full_finetune_rule_bytes(7e9, 2) == 70e9
    assert full_finetune_rule_bytes(7e9, 2, activation_bytes=20e9) == 90e9


def test_seed_lora_example():
    # 7B + LoRA at 0.5 % (35M) -> 14 GB + 0.42 GB
    assert lora_rule_bytes(7e9, 35e6) == pytest.approx(14.42e9)


def _rules(method: str) -> list:
    return training_rules(
        params_total=7_000_000_000,
        params_trainable=35_000_000 if method in ("lora", "qlora") else 7_000_000_000,
        method=method,
        precision="bf16-mixed",
        optimizer="adamw",
        half_bytes=2,
        vram_gb=24,
        precise_gpus=6,
        states_bytes_unsharded=112e9,
        activation_bytes=5e9,
        training_bytes_one_gpu=120e9,
        setup_text="micro-batch 1 × 2048 tokens",
    )


def test_full_training_shows_gpu_states_and_full_finetune_rules_beside_precise_figures():
    rules = {rule.name: rule for rule in _rules("full")}
    assert set(rules) == {"GPUs to train", "Model states (2+2+12)", "Full fine-tune"}
    assert rules["GPUs to train"].value == 7 and rules["GPUs to train"].precise == 6
    assert rules["Model states (2+2+12)"].value == 112e9
    assert rules["Full fine-tune"].value == 75e9  # 70 GB + the planner's 5 GB of activations
    for rule in rules.values():
        assert rule.why_they_differ and "\n" not in rule.why_they_differ


def test_lora_shows_the_lora_rule_and_says_qlora_stores_4_bit():
    names = [rule.name for rule in _rules("lora")]
    assert names == ["GPUs to train", "LoRA"]
    qlora = {rule.name: rule for rule in _rules("qlora")}["LoRA"]
    assert "4 bits" in qlora.why_they_differ


# ---- every seed table, side by side with the planner's precise figure (docs/plan.md, "The tutorials' tables")

GB = 1e9


def test_seed_001_7b_fine_tune_breakdown_and_its_lora_35_gb():
    """7B in FP16: weights 14 + gradients 14 + Adam 28 + activations (batch 32) 20 + buffers 5 =
    81 GB; LoRA ≈ 35 GB. The planner (Llama-2-7B, pure bf16 AdamW, 32 x 128 tokens) keeps the weights, Adam and
    activations within a few GB of the seed, but gradients and activations never peak together: activations die
    as gradients appear, so 70.7 GB, not 81."""
    from lmforge.plan.memory import training_memory
    from lmforge.plan.models import resolve_model
    from lmforge.plan.setup import TrainingSetup

    seed = {"weights": 14, "gradients": 14, "optimizer_states": 28, "activations": 20, "buffers": 5}
    assert sum(seed.values()) == 81
    spec = resolve_model("llama-2-7b")
    full = training_memory(spec, TrainingSetup(method="full", precision="bf16", micro_batch_size=32, seq_len=128))
    figures = {key: full[key] / GB for key in seed}
    assert figures["weights"] == pytest.approx(13.5, abs=0.05) and figures["optimizer_states"] == pytest.approx(
        27.0, abs=0.05
    )
    assert figures["activations"] == pytest.approx(24.6, abs=0.1)
    assert (
        figures["gradients"] == 0
    )  # none yet at the forward-backward peak (the head's comes once the logits are freed)
    assert full.total_bytes / GB == pytest.approx(70.7, abs=0.1)
    # LoRA (the seed's r = 8 on q_proj, v_proj), same batch: the frozen base, and activations that do change.
    lora = training_memory(
        spec,
        TrainingSetup(
            method="lora",
            precision="bf16",
            micro_batch_size=32,
            seq_len=128,
            lora_r=8,
            target_modules=("q_proj", "v_proj"),
        ),
    )
    assert lora.total_bytes / GB == pytest.approx(39.4, abs=0.1)  # seed: about 35


def test_seed_004_fine_tuning_table_for_a_7b_model():
    """The tutorials: full > 100 GB, LoRA 20-25 GB, QLoRA 14-18 GB, prompt tuning < 5 GB. The planner, Llama-2-7B at
    micro-batch 4 x 512 with each method's recipe default (checkpointing for LoRA/QLoRA): full 114.0, LoRA 19.3,
    QLoRA 7.8, prompt tuning 24.9 GB. Prompt tuning keeps the whole 13.5 GB bf16 base and back-propagates through
    every layer, so "< 5 GB" holds only for small models (Qwen2.5-0.5B: 3.3 GB at 1 x 512)."""
    from lmforge.plan import plan_training

    def total(model: str, method: str, **shape) -> float:
        shape = {"micro_batch_size": 4, "seq_len": 512, **shape}
        return (
            plan_training(model, method=method, gpus=1, levers=False, verdicts=False, **shape).memory.total_bytes / GB
        )

    assert total("llama-2-7b", "full") == pytest.approx(114.0, abs=0.1) and total("llama-2-7b", "full") > 100
    assert total("llama-2-7b", "lora") == pytest.approx(19.3, abs=0.1)  # seed: 20-25 (method.lora_r 8)
    assert total("llama-2-7b", "qlora") == pytest.approx(7.8, abs=0.1)  # seed: 14-18 (20.6 without checkpointing)
    assert total("llama-2-7b", "prompt") == pytest.approx(24.9, abs=0.1)  # seed: < 5
    assert total("qwen2.5-0.5b", "prompt", micro_batch_size=1) < 5


def test_seed_002_ratios_inference_fine_tuning_and_gpu_counts():
    """The tutorials: inference ≈ 1/4 of training memory, fine-tuning ≈ 1/2, and inference needs 1/8-1/9 of
    the training GPUs (7 RTX 4090 to train 7B, 1 to serve it). Planner, Llama-2-7B on one GPU, 2048 tokens: serving
    (512-token context) 0.13 of full training, LoRA 0.17; on RTX 4090s training takes 6 (ZeRO-3 with
    checkpointing), serving 1."""
    from lmforge.plan import plan_inference, plan_training

    train = plan_training("llama-2-7b", gpus=1, recompute="none", levers=False, verdicts=False).memory.total_bytes
    serve = plan_inference("llama-2-7b", context_len=512, verdicts=False).memory.total_bytes
    lora = plan_training("llama-2-7b", method="lora", gpus=1, levers=False, verdicts=False).memory.total_bytes
    assert serve / train == pytest.approx(0.134, abs=0.005)  # seed: 1/4
    assert lora / train == pytest.approx(0.173, abs=0.005)  # seed: 1/2
    trained_on = plan_training("llama-2-7b", gpu="rtx-4090", verdicts=False).layout.gpus
    served_on = plan_inference("llama-2-7b", gpu="rtx-4090", verdicts=False).layout.gpus
    assert (trained_on, served_on) == (6, 1)  # seed: 7 and 1 (1/8-1/9)
    assert gpus_needed_rule(7e9, 24) == 7


def test_seed_002_activation_formula_beside_the_itemised_model():
    """L·b·s·h·p·[16 + 2/p + (a·s/h)(2 + 1/p)]; Llama-2-7B, b = 1, s = 2048, p = 2: the formula
    (Korthikanti et al.'s sbh(34 + 5as/h) per layer, a GPT block with a 4h GELU MLP) says 30.6 GB; the planner's
    itemised block with eager attention, as the formula assumes, 38.1 GB (SwiGLU's three 11008-wide tensors and
    RMSNorm's fp32 upcasts outweigh the 4h MLP), and with SDPA, which keeps no s x s scores, 12.3 GB."""
    from lmforge.plan.memory import activation_bytes
    from lmforge.plan.models import resolve_model
    from lmforge.plan.rules import activation_formula_bytes
    from lmforge.plan.setup import TrainingSetup

    formula = activation_formula_bytes(layers=32, heads=32, batch=1, seq=2048, hidden=4096, p=2)
    assert formula == 32 * 2048 * 4096 * (34 + 5 * 32 * 2048 / 4096)  # Korthikanti et al. 2022, eq. 1 at p = 2
    assert formula / GB == pytest.approx(30.6, abs=0.05)
    spec = resolve_model("llama-2-7b")
    assert activation_bytes(spec, TrainingSetup(precision="bf16", attention="eager")) / GB == pytest.approx(
        38.1, abs=0.05
    )
    assert activation_bytes(spec, TrainingSetup(precision="bf16")) / GB == pytest.approx(12.3, abs=0.05)


def test_seed_003_64_gpu_layout_dp2_pp4_tp8():
    """64 GPUs in 8 nodes: TP 8 inside a node, PP 4 across nodes, DP 2 = 64. The planner finds it for
    Mixtral-8x22B (141B, > 100B) on 64 A100-80G: fits at 43.8 GiB per GPU with ZeRO-1, naming Megatron-LM (lmforge
    train does not drive TP/PP) and the 75 % bubble of one micro-batch per step; left free on 64 GPUs it keeps
    ZeRO-3 data parallelism, which lmforge train runs."""
    from lmforge.plan import plan_training

    seeded = plan_training("mixtral-8x22b", gpu="a100-80g", gpus=64, tp=8, pp=4, verdicts=False)
    layout = seeded.layout
    assert seeded.fits and (layout.dp, layout.pp, layout.tp) == (2, 4, 8) and layout.zero_stage <= 1
    assert seeded.memory.total_bytes / GIB == pytest.approx(43.8, abs=0.1)
    assert "Megatron-LM" in seeded.choice.reason and "idles 75%" in seeded.choice.reason
    free = plan_training("mixtral-8x22b", gpu="a100-80g", gpus=64, verdicts=False)
    assert free.fits and free.layout.zero_stage == 3 and free.layout.tp == free.layout.pp == 1


def test_seed_003_70b_decodes_at_about_10_tokens_per_second():
    """token speed ≈ bandwidth / model size, "70B: about 10 tokens/s". The rule on one A100-40G
    (1555 GB/s, 141 GB of bf16 weights) says 11.0; the planner needs 4 of them (TP 4 streams with four cards'
    bandwidth): 43.7 tokens/s."""
    from lmforge.plan import plan_inference

    plan = plan_inference("llama-3.1-70b", gpu="a100-40g", verdicts=False)
    rule = {r.name: r for r in plan.rules_of_thumb}["Decode speed"]
    assert rule.value == pytest.approx(11.0, abs=0.05)
    assert plan.layout.tp == 4 and plan.throughput.decode_tokens_per_second == pytest.approx(43.7, abs=0.1)
    assert rule.precise == plan.throughput.decode_tokens_per_second
