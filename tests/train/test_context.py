import json
from pathlib import Path

from lmforge.train.context import load_stage_data


def test_held_out_fraction_never_puts_one_prompt_in_both_train_and_validation(tmp_path, make_config):
    rows = []
    for i in range(30):  # every prompt three times, as scraped data often has it
        rows += [{"instruction": f"What is {i} plus 1?", "output": str(i + 1)}] * 3
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = make_config("sft", data={"train": str(path), "max_examples": None, "eval_fraction": 0.2})

    loaded = load_stage_data(config, "chat")

    def prompts(dataset):
        return {m[0]["content"] for m in dataset["messages"]}

    assert len(loaded.train) + len(loaded.eval) == 90
    assert prompts(loaded.eval)
    assert not prompts(loaded.train) & prompts(loaded.eval)


def test_offload_activations_needs_cuda_and_says_so_before_anything_loads(make_config, monkeypatch):
    import pytest
    import torch

    from lmforge.errors import ConfigError
    from lmforge.train.run import run_training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = make_config("sft", "lora", train={"offload_activations": True})
    with pytest.raises(ConfigError, match="train.offload_activations .* needs a CUDA GPU"):
        run_training(config, progress=False)
    assert not Path(config.out).exists()


def test_offload_activations_runs_every_training_step_under_trls_offloading_context(make_config, monkeypatch):
    """The wiring, on a CPU: TRL's OffloadActivations itself needs an accelerator's streams, so a recorder stands
    in for it; every micro-batch's training step (forward and backward) must run inside it, and the run's plan
    prices the offloaded activations."""
    import trl.models.activation_offloading as offloading

    from lmforge.train import preflight
    from lmforge.train.run import run_training

    entered, models = [], []

    class Recorder:
        def __enter__(self):
            entered.append(1)

        def __exit__(self, *exc):
            entered.append(-1)

    monkeypatch.setattr(offloading, "get_act_offloading_ctx_manager", lambda model: models.append(model) or Recorder())
    monkeypatch.setattr(preflight, "check_offload_hardware", lambda config: None)
    config = make_config("sft", "lora", train={"offload_activations": True, "grad_accum": 2})

    result = run_training(config, progress=False)

    assert result.steps == 2
    assert entered == [1, -1] * 4  # 2 optimizer steps x 2 micro-batches, each step entered and left
    assert len(models) == 1  # one context for the run, as TRL's trainers build it
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["planner"]["setup"]["offload_activations"] is True
