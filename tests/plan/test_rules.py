"""The seeds' rules of thumb, reproducing their worked examples digit for digit."""

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
    # seed 002 §2.2 / seed 004: 7B -> bf16 14 GB, int8 7 GB, int4 3.5 GB, fp32 28 GB
    assert inference_rule_bytes(7e9, NOMINAL_BYTES_PER_WEIGHT["bf16"]) == 14e9
    assert inference_rule_bytes(7e9, NOMINAL_BYTES_PER_WEIGHT["int8"]) == 7e9
    assert inference_rule_bytes(7e9, NOMINAL_BYTES_PER_WEIGHT["int4"]) == 3.5e9
    assert inference_rule_bytes(7e9, NOMINAL_BYTES_PER_WEIGHT["fp32"]) == 28e9


def test_seed_gpu_count_examples():
    # seed 002 §3.1: 7 × 18 × 1.25 / 24 ≈ 7 RTX 4090; / 40 ≈ 4 A100-40G
    assert gpus_needed_rule(7e9, 24) == 7
    assert gpus_needed_rule(7e9, 40) == 4


def test_seed_model_states_example():
    # seed 002 §2.1: (2 + 2 + 12) × 7e9 = 112e9 bytes ≈ 104 GiB
    assert model_states_rule_bytes(7e9) == 112e9
    assert model_states_rule_bytes(7e9) / GIB == pytest.approx(104.3, abs=0.05)


def test_seed_full_finetune_example():
    # seed 001 §1.2: 7B fp16 -> 70 GB before activations, ~90 GB with ~20 GB of activations
    assert full_finetune_rule_bytes(7e9, 2) == 70e9
    assert full_finetune_rule_bytes(7e9, 2, activation_bytes=20e9) == 90e9


def test_seed_lora_example():
    # seed 004: 7B + LoRA at 0.5 % (35M) -> 14 GB + 0.42 GB
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
