"""Fit diagnosis after seed 001 §2.1, and the loss-curve PNG."""

from __future__ import annotations

from lmforge.train.plots import diagnose, plot_losses


def _curve(values):
    return [(i + 1, v) for i, v in enumerate(values)]


def test_high_and_flat_is_underfitting():
    verdict = diagnose(_curve([5.0, 4.9, 4.85, 4.84, 4.84, 4.83]), _curve([4.9, 4.88, 4.87]))
    assert verdict.verdict == "underfitting"


def test_validation_rising_while_train_falls_is_overfitting():
    train = _curve([4.0, 3.0, 2.0, 1.5, 1.0, 0.6, 0.3, 0.1])
    val = [(2, 3.2), (4, 2.5), (6, 2.9), (8, 3.4)]
    verdict = diagnose(train, val)
    assert verdict.verdict == "overfitting" and "step 4" in verdict.reason


def test_both_falling_is_a_good_fit():
    verdict = diagnose(_curve([4.0, 3.0, 2.2, 1.6, 1.2, 1.0]), [(2, 3.1), (4, 1.8), (6, 1.1)])
    assert verdict.verdict == "good fit"


def test_too_few_points():
    assert diagnose(_curve([4.0, 3.0]), []).verdict == "too short to tell"


def test_png_has_both_curves(tmp_path):
    records = [{"step": s, "loss": 4.0 / s} for s in range(1, 6)] + [{"step": 5, "eval_loss": 1.2}]
    path = plot_losses(records, tmp_path / "plots" / "loss.png", "sft / lora")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_losses([], tmp_path / "none.png", "empty") is None
