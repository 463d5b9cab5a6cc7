"""NaN guard, metrics.jsonl and early stopping as a user sees them."""

from __future__ import annotations

import json

import pytest

from lmforge.train.callbacks import NanGuardCallback, TrainingDivergedError, read_metrics, truncate_metrics
from lmforge.train.run import run_training


def test_nan_loss_stops_with_advice():
    class State:
        global_step = 7

    with pytest.raises(TrainingDivergedError, match="step 7.*learning_rate"):
        NanGuardCallback().on_log(None, State(), None, logs={"loss": float("nan")})


def test_diverging_run_stops_cleanly(make_config):
    config = make_config("sft", "full", train={"learning_rate": 1e38, "max_grad_norm": 0.0, "max_steps": 6})
    with pytest.raises(TrainingDivergedError):
        run_training(config, progress=False)


def test_torn_last_line_is_skipped_and_truncation_keeps_earlier_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n" + json.dumps({"step": 2, "loss": 1.0}) + '\n{"st')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    truncate_metrics(path, 1)
    assert [r["step"] for r in read_metrics(path)] == [1]


def test_metrics_progress_and_early_stopping(make_config):
    config = make_config(
        "sft",
        "full",
        data={"eval_fraction": 0.5},
        train={
            "max_steps": 30,
            "eval_every": 1,
            "save_every": 1,
            "keep_last": 1,
            "learning_rate": 0.05,
            "lr_scheduler": "constant",
            "early_stopping": {"patience": 1, "metric": "eval_loss", "mode": "max"},
        },
    )
    result = run_training(config, progress=True)
    assert result.steps < 30, "a loss that falls never improves a 'max' metric: patience 1 stops early"
    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert any("eval_loss" in r for r in records) and any("learning_rate" in r for r in records)
    assert all(r["tokens_seen"] >= 0 for r in records)
    assert (result.run_dir / "plots" / "loss.png").is_file()


def test_report_to_tensorboard_writes_events_into_the_run(make_config):
    result = run_training(make_config("sft", "lora", train={"report_to": ["tensorboard"]}), progress=False)
    assert list((result.run_dir / "logs").rglob("events.out.tfevents.*"))
