"""The planner's input types reject what cannot run, naming the value and what is allowed."""

from __future__ import annotations

import pytest

from lmforge.errors import UserInputError
from lmforge.plan.setup import CATEGORIES, InferenceSetup, Layout, MemoryBreakdown, TrainingSetup


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("method", "dora", "lora"),
        ("precision", "fp8", "bf16-mixed"),
        ("optimizer", "adam", "adamw-8bit"),
        ("recompute", "partial", "selective"),
        ("attention", "flash3", "sdpa"),
        ("quant_bits", 3, "4"),
    ],
)
def test_unknown_choice_names_value_and_allowed(field, value, named):
    with pytest.raises(UserInputError) as error:
        TrainingSetup(**{field: value})
    assert repr(value) in str(error.value) and named in str(error.value)


@pytest.mark.parametrize("field", ["micro_batch_size", "seq_len", "grad_accum", "lora_r", "trainable_layers"])
@pytest.mark.parametrize("value", [0, -4])
def test_sizes_must_be_positive(field, value):
    with pytest.raises(UserInputError, match=field):
        TrainingSetup(**{field: value})


def test_inference_setup_accepts_gguf_names_in_any_case_and_checks_lengths():
    assert InferenceSetup(weight_format="q4_k_m").weight_format == "Q4_K_M"
    with pytest.raises(UserInputError, match="weight_format"):
        InferenceSetup(weight_format="q1")
    with pytest.raises(UserInputError, match="exceeds context_len"):
        InferenceSetup(context_len=100, prompt_len=200)
    with pytest.raises(UserInputError, match="batch_size"):
        InferenceSetup(batch_size=0)


def test_layout_counts_gpus_and_rejects_impossible_combinations():
    assert Layout(dp=4, tp=2, pp=2).gpus == 16
    with pytest.raises(UserInputError, match="zero_stage"):
        Layout(zero_stage=4)
    with pytest.raises(UserInputError, match="ZeRO stage 3"):
        Layout(zero_stage=2, offload_params=True)
    with pytest.raises(UserInputError, match="tp > 1"):
        Layout(sequence_parallel=True)
    with pytest.raises(UserInputError, match="dp"):
        Layout(dp=0)


def test_breakdown_has_fixed_keys_and_sums():
    memory = MemoryBreakdown({"weights": 10, "activations": 5})
    assert tuple(memory.bytes_by_category) == CATEGORIES
    assert memory.total_bytes == 15 and memory["kv_cache"] == 0
    with pytest.raises(ValueError):
        MemoryBreakdown({"weight": 1})
