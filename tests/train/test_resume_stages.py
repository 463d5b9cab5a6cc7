"""--resume continues every stage exactly, not only sft (USERS.md training #2: "PPO cannot resume")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmforge.train.run import run_training

STAGES = ["pretrain", "rm", "dpo", "kto", "orpo", "rlhf", "distill", "classify", "mlm"]


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


@pytest.mark.parametrize("stage", STAGES)
def test_interrupted_stage_resumes_to_the_same_losses(
    stage, make_config, tiny_llama_dir, tiny_reward_dir, tiny_bert_dir
):
    extra: dict = {"train": {"max_steps": 4, "save_every": 2, "keep_last": 2}}
    if stage == "rlhf":
        extra["rlhf"] = {"reward_model": str(tiny_reward_dir), "num_generations": 2, "max_new_tokens": 4}
    if stage == "distill":
        extra["distill"] = {"teacher": str(tiny_llama_dir)}
    if stage == "orpo":
        extra["data"] = {"max_len": 256}
    if stage in ("classify", "mlm"):
        extra["model"] = {"path": str(tiny_bert_dir)}
    config = make_config(stage, "lora" if stage in ("dpo", "rlhf", "orpo", "kto") else "full", **extra)
    finished = run_training(config, progress=False)
    expected = _losses(finished.run_dir)
    # As if killed after checkpoint-2: the later checkpoint and the final model never landed.
    shutil.rmtree(finished.run_dir / "checkpoints" / "checkpoint-4")
    shutil.rmtree(finished.final_dir)
    (finished.run_dir / "result.json").unlink()
    resumed = run_training(config, resume=True, progress=False)
    got = _losses(resumed.run_dir)
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), f"{stage} step {step}"
    # Each stage is diagnosed by what measures it (a GRPO or DPO loss is no fit curve).
    diagnosis = json.loads((resumed.run_dir / "result.json").read_text())["diagnosis"]
    measure = {
        "rm": "pairwise accuracy",
        "dpo": "implicit reward",
        "kto": "implicit reward",
        "orpo": "implicit reward",
        "rlhf": "mean reward",
    }.get(stage, "loss")
    assert measure in diagnosis["reason"] and diagnosis["verdict"] != "too short to tell", diagnosis
