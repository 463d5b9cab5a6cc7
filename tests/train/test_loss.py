"""train.loss: the chunked loss is the same loss with a lower peak, and the planner and the run agree on it."""

from __future__ import annotations

import json

import pytest

from lmforge.errors import ConfigError, UserInputError

# A large vocabulary on a tiny body (Gemma 3's 262,144 entries, hidden 16): the loss's logits dominate the step.
VOCAB, HIDDEN, BATCH, SEQ = 262_144, 8, 2, 32


def _tiny_config() -> dict:
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    }


def _step(loss: str):
    """One real forward + backward on CPU under MemTracker: (loss value, tracked peak bytes, gradients)."""
    import torch
    import transformers
    from torch.distributed._tools.mem_tracker import MemTracker

    from lmforge.train.loss import apply_loss

    torch.manual_seed(0)
    config = {k: v for k, v in _tiny_config().items() if k not in ("model_type", "architectures")}
    model = apply_loss(transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)), loss)
    model.train()
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :8] = -100  # a masked prompt, as sft has
    tracker = MemTracker()
    tracker.track_external(model, ids)
    with tracker:
        value = model(input_ids=ids, labels=labels).loss
        value.backward()
    peak = next(iter(tracker.get_tracker_snapshot("peak").values()))["Total"]
    return value.item(), peak, {name: p.grad for name, p in model.named_parameters()}


def test_chunked_loss_is_the_same_loss_with_a_lower_measured_and_simulated_peak():
    standard_loss, standard_peak, standard_grads = _step("standard")
    chunked_loss, chunked_peak, chunked_grads = _step("chunked")
    assert chunked_loss == pytest.approx(standard_loss, abs=1e-5)
    for name, grad in standard_grads.items():
        assert (chunked_grads[name] - grad).abs().max().item() < 1e-5, name
    # Measured: real CPU tensors tracked by MemTracker (trl's CPU fallback, 4096 x 32768 tiles in fp32).
    assert chunked_peak < 0.6 * standard_peak
    # Simulated the same way the planner checks itself (fake tensors, GPU kernels' allocations).
    from lmforge.plan.models import spec_from_config
    from lmforge.plan.setup import TrainingSetup
    from lmforge.plan.simulate import simulate_training

    spec = spec_from_config(_tiny_config(), name="tiny-big-vocab")
    simulated = {
        loss: simulate_training(spec, TrainingSetup(precision="fp32", seq_len=SEQ, micro_batch_size=BATCH, loss=loss))
        for loss in ("standard", "chunked")
    }
    assert simulated["chunked"].peak_bytes < 0.6 * simulated["standard"].peak_bytes


def test_fused_loss_without_cuda_is_a_clear_error():
    import transformers

    from lmforge.train.loss import apply_loss

    model = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        )
    )
    with pytest.raises(UserInputError, match="CUDA"):
        apply_loss(model, "fused")


def test_a_stage_with_its_own_loss_refuses_train_loss(make_config):
    with pytest.raises(ConfigError, match="train.loss: chunked replaces the causal-LM loss"):
        make_config("dpo", "lora", train={"loss": "chunked"})


def test_sft_with_the_chunked_loss_trains_and_plans_what_it_runs(make_config):
    from lmforge.train.run import run_training

    config = make_config("sft", "lora", train={"loss": "chunked"})
    result = run_training(config, progress=False)
    assert result.steps == 2 and result.final_metrics["train_loss"] > 0
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["planner"]["setup"]["loss"] == "chunked"
    assert plan["planner"]["levers"] == []  # the plan of this run adds nothing the run does not do
    assert plan["planner"]["model"]["params_trainable"] == plan["actual"]["trainable_params"]
