"""The Plan tab's callback: the planner's answer laid out (verdict, stacked bar, every GPU, cost, rules)."""

from __future__ import annotations

import json

import pytest

from lmforge.ui.plan_tab import GIB, plan_view


def _plan(workspace, **changes):
    values = {
        "model": "llama-3.1-8b",
        "config_json": "",
        "method": "lora",
        "precision": "bf16-mixed",
        "batch_size": 1,
        "seq_len": 2048,
        "grad_accum": 1,
        "recompute": "full",
        "lora_rank": 8,
        "gpu": "rtx-4090",
        "gpus": 0,
        "tokens": 1e9,
    }
    values.update(changes)
    return plan_view(workspace, **values)


def test_the_view_shows_what_the_planner_says(workspace):
    from lmforge.plan import plan_training

    view = _plan(workspace)
    plan = plan_training("llama-3.1-8b", method="lora", recompute="full", gpu="rtx-4090")
    verdict = "fits" if plan.fits else "does NOT fit"
    assert f"{verdict}</span>: {plan.layout.gpus} × NVIDIA GeForce RTX 4090" in view.verdict
    assert f"{plan.memory.total_bytes / GIB:,.1f} GiB per GPU" in view.verdict
    assert plan.choice.reason in view.verdict
    # The bar: every non-zero category, then free and headroom, adding up to the card's 24 GiB.
    categories = set(view.breakdown["category"])
    assert {"weights", "adapter", "activations", "free", "headroom (kept free)"} <= categories
    assert view.breakdown["GiB"].sum() == pytest.approx(24.0, abs=0.01)
    assert view.breakdown["category"].iloc[-1] == "weights"  # drawn at the bottom of the stack
    assert len(view.verdicts) == 19 and "rtx-4090" in set(view.verdicts["GPU"].str.split().str[0])
    assert "GPU-hours" in view.cost and "1,000,000,000 tokens" in view.cost
    assert {
        "GPUs to train (rule of thumb: 18 B/param of model states + 25% for activations)",
        "LoRA (rule of thumb: 16-bit frozen base + 12 B per LoRA parameter)",
    } <= set(view.rules["rule of thumb"])


def test_a_pasted_config_json_is_planned_as_that_model(workspace, ui_root):
    config = json.loads((ui_root / "models" / "tiny" / "config.json").read_text())
    view = _plan(workspace, config_json=json.dumps(config), method="full", seq_len=128)
    assert "LlamaForCausalLM" in view.verdict and "fits" in view.verdict


def test_bad_input_is_one_line_in_place_of_the_verdict(workspace):
    assert _plan(workspace, batch_size=0).verdict == "**Error:** micro_batch_size must be a positive integer, got 0"
    assert _plan(workspace, config_json="{not json").verdict.startswith("**Error:** the pasted config.json is not JSON")
    assert "outside the folders this UI may use" in _plan(workspace, model="/etc").verdict
    unknown = _plan(workspace, gpu="a100-81g")
    assert unknown.verdict.startswith("**Error:** Unknown GPU") and unknown.breakdown is None
