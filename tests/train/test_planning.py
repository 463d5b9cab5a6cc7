"""train/planning.py: plan.json plans what the run trains, head included."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(("stage", "method"), [("rm", "lora"), ("classify", "lora"), ("classify", "freeze")])
def test_the_planned_trainable_count_is_what_trained(make_config, stage: str, method: str) -> None:
    from lmforge.train.run import run_training

    result = run_training(make_config(stage, method, train={"max_steps": 1}), progress=False)
    assert result.planned_trainable_params == result.trainable_params > 0


def test_a_reward_model_is_planned_without_vocabulary_logits(make_config) -> None:
    """Planned as a causal LM, a reward model's memory had vocabulary-sized fp32 logits it never computes."""
    from transformers import AutoConfig

    from lmforge.train.planning import plan_run

    config = make_config("rm", data={"max_len": 48})
    model_config = AutoConfig.from_pretrained(config.model.path)
    reward = plan_run(config, model_config, num_labels=1)
    as_lm = plan_run(make_config("sft", data={"max_len": 48}), model_config)
    tokens = config.train.micro_batch_size * 48
    assert reward["model"]["architecture"].endswith("ForSequenceClassification")
    assert reward["memory"]["breakdown"]["buffers"] < 3 * 4 * tokens * 2  # a score of one output per position
    assert as_lm["memory"]["breakdown"]["buffers"] >= 3 * 4 * tokens * model_config.vocab_size
    assert json.dumps(reward)  # plan.json serialises it
