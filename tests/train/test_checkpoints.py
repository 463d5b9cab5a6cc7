"""Atomic checkpoints, rotation, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.errors import UserInputError
from lmforge.train import checkpoints
from lmforge.train.callbacks import read_metrics
from lmforge.train.run import run_training


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def test_keeps_last_k_plus_best_and_only_complete_ones(make_config):
    config = make_config(
        "sft",
        "full",
        data={"eval_fraction": 0.5},
        train={
            "max_steps": 8,
            "save_every": 2,
            "eval_every": 2,
            "keep_last": 2,
            "learning_rate": 0.05,
            "lr_scheduler": "constant",
            "early_stopping": {"metric": "eval_loss", "mode": "max"},
        },
    )
    result = run_training(config, progress=False)
    names = [p.name for p in checkpoints.list_checkpoints(result.run_dir / "checkpoints")]
    assert names[-2:] == ["checkpoint-6", "checkpoint-8"]
    # mode max on eval_loss picks the worst-loss checkpoint: kept although older than the last two
    assert result.best_checkpoint is not None and result.best_checkpoint.name in names
    assert len(names) <= 3
    assert not (result.run_dir / "checkpoints" / checkpoints.STAGING).exists()
    state = json.loads((result.run_dir / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    assert checkpoints.STAGING not in (state["best_model_checkpoint"] or "")


def test_incomplete_checkpoint_is_ignored(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "checkpoint-2").mkdir(parents=True)
    (root / checkpoints.STAGING / "checkpoint-4").mkdir(parents=True)  # a save killed midway
    assert checkpoints.last_checkpoint(root).name == "checkpoint-2"
    checkpoints.discard_incomplete(root)
    assert not (root / checkpoints.STAGING).exists()


def test_new_run_refuses_a_folder_that_holds_one(make_config):
    config = make_config("sft", "full")
    run_training(config, progress=False)
    with pytest.raises(UserInputError, match="--resume.*init_from"):
        run_training(config, progress=False)


def test_resume_without_checkpoint_says_so(make_config):
    with pytest.raises(UserInputError, match="no complete checkpoint"):
        run_training(make_config("sft", "full"), resume=True, progress=False)


def test_init_from_starts_a_new_run_from_finished_weights(make_config, tmp_path):
    first = run_training(make_config("sft", "full"), progress=False)
    config = make_config("sft", "lora", init_from=str(first.run_dir), out=str(tmp_path / "second"))
    second = run_training(
        config.model_copy(update={"model": config.model.model_copy(update={"path": None})}), progress=False
    )
    assert second.steps == 2 and (second.final_dir / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(make_config, tmp_path):
    """A run killed with SIGKILL after a mid-run checkpoint, resumed, logs the same loss at every step
    as an uninterrupted run with the same seed."""
    steps = 12
    settings = {
        "data": {"max_examples": 64},
        "method": {"lora_dropout": 0.1},
        "train": {"max_steps": steps, "save_every": 3, "keep_last": 1, "micro_batch_size": 2},
    }
    reference = run_training(make_config("sft", "lora", out=str(tmp_path / "reference"), **settings), progress=False)
    config = make_config("sft", "lora", out=str(tmp_path / "killed"), **settings)
    config_file = tmp_path / "killed.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lmforge", "train", str(config_file), "--json"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = config.out and Path(config.out) / "checkpoints"
    deadline = time.monotonic() + 120
    while checkpoints.last_checkpoint(root) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoints.last_checkpoint(root)
    assert killed_at is not None and not (Path(config.out) / "final").exists(), "the kill came after the end"

    resume_started = time.time()
    resumed = run_training(config, resume=True, progress=False)
    assert resumed.steps == steps
    checkpoint_step = int(killed_at.name.split("-")[1])
    kept = [r for r in read_metrics(resumed.run_dir / "metrics.jsonl") if "loss" in r and r["step"] <= checkpoint_step]
    assert checkpoint_step >= 3 and all(r["time"] < resume_started for r in kept), "steps before it were not redone"
    expected, got = _losses(reference.run_dir), _losses(resumed.run_dir)
    assert sorted(got) == list(range(1, steps + 1))
    for step in range(1, steps + 1):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), f"step {step}"


def test_resume_refuses_a_changed_model_data_or_method(make_config):
    config = make_config("sft", "lora", train={"save_every": 1})
    run = run_training(config, progress=False)
    (run.run_dir / "final").rename(run.run_dir / "final-old")  # as if killed before the end
    changed = make_config("sft", "lora", method={"lora_r": 8}, data={"max_len": 40}, train={"save_every": 1})
    with pytest.raises(UserInputError, match="method.lora_r.*data.max_len|data.max_len.*method.lora_r"):
        run_training(changed, resume=True, progress=False)
    more_steps = make_config("sft", "lora", train={"save_every": 1, "max_steps": 3})
    assert run_training(more_steps, resume=True, progress=False).steps == 3


def test_checkpoints_and_final_model_pass_the_pickle_scanner(make_config):
    """Every file a run leaves must be loadable through lmforge's own gate (no arbitrary-class pickle)."""
    from lmforge.files.scan import scan_paths
    from lmforge.train.run import run_training

    config = make_config("sft", "lora", train={"max_steps": 2, "save_every": 1})
    result = run_training(config, progress=False)

    report = scan_paths([result.run_dir])
    assert report.exit_code == 0, [(f.path, f.verdict) for f in report.files if f.verdict != "safe"]
    assert list(result.run_dir.rglob("optimizer.pt")), "the scan must cover real checkpoint pickles"


def test_resume_refuses_what_the_restored_optimizer_and_schedule_decide(make_config):
    """transformers restores the learning rate and schedule from the checkpoint whatever the config says."""
    config = make_config("sft", "lora", train={"save_every": 1})
    run = run_training(config, progress=False)
    (run.run_dir / "final").rename(run.run_dir / "final-old")  # as if killed before the end
    changed = make_config("sft", "lora", train={"save_every": 1, "learning_rate": 0.5, "micro_batch_size": 2})
    with pytest.raises(
        UserInputError,
        match=r"train\.learning_rate \(0\.001 -> 0\.5\), train\.micro_batch_size "
        r"\(4 -> 2\) differ from .*init_from",
    ):
        run_training(changed, resume=True, progress=False)


def test_resume_replans_a_longer_schedule_and_a_finished_run_is_left_alone(make_config, tmp_path):
    """max_steps 4 -> 6 re-plans the cosine schedule from step 5 (transformers ran step 5 at the old schedule's
    rate, 0); resuming a finished run does nothing; a checkpoint at max_steps is finished without a step 7."""
    from safetensors.torch import load_file
    from transformers import get_scheduler
    from typer.testing import CliRunner

    from lmforge.cli.main import app

    previous_umask = os.umask(0o022)
    try:
        settings = {"max_steps": 4, "save_every": 1, "warmup_steps": 1, "lr_scheduler": "cosine"}
        run_training(make_config("sft", "lora", train=settings), progress=False)
        longer = make_config("sft", "lora", train={**settings, "max_steps": 6})
        resumed = run_training(longer, resume=True, progress=False)
        run_dir = resumed.run_dir
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        planned = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=6)
        expected = [planned.lr_lambdas[0](step) * 1e-3 for step in range(6)]
        logged = {r["step"]: r["learning_rate"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}
        assert [logged[step] for step in (5, 6)] == pytest.approx(expected[4:6])
        assert resumed.steps == 6 and "the cosine schedule is re-planned over 6 steps" in resumed.notes[0]

        stamps = {name: (run_dir / name).stat().st_mtime_ns for name in ("final", "result.json", "metrics.jsonl")}
        for max_steps in (6, 5):  # the same length, or less than it ran: nothing to do
            again = run_training(
                make_config("sft", "lora", train={**settings, "max_steps": max_steps}), resume=True, progress=False
            )
            assert again.steps == 6
        config_file = tmp_path / "sft.yaml"
        config_file.write_text(yaml.safe_dump(longer.model_dump(mode="json")))
        cli = CliRunner().invoke(app, ["train", str(config_file), "--resume"])
        assert cli.exit_code == 0 and cli.stdout.count("\n") == 1
        assert "finished at step 6" in cli.stdout and "nothing to do" in cli.stdout
        assert {name: (run_dir / name).stat().st_mtime_ns for name in stamps} == stamps

        shutil.rmtree(run_dir / "final")  # killed after its last checkpoint, before final/ landed
        (run_dir / "result.json").unlink()
        with pytest.raises(UserInputError, match=r"train\.max_steps 5 is below the step of .*checkpoint-6"):
            run_training(make_config("sft", "lora", train={**settings, "max_steps": 5}), resume=True, progress=False)
        finished = run_training(longer, resume=True, progress=False)
        assert finished.steps == 6 and max(logged) == max(r["step"] for r in read_metrics(run_dir / "metrics.jsonl"))
        final = load_file(run_dir / "final" / "adapter_model.safetensors")
        saved = load_file(run_dir / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors")
        assert all(torch.equal(final[name], saved[name]) for name in saved)
        # Colleagues can read the run (item 13): the files have the mode a plain write gives under umask 022.
        assert {
            oct(stat.S_IMODE((run_dir / name).stat().st_mode))
            for name in ("config.yaml", "metrics.jsonl", "result.json", "final")
        } <= {oct(0o644), oct(0o755)}
    finally:
        os.umask(previous_umask)
