"""Fit diagnosis (the textbook reading, Goodfellow et al. 2016 §5.2), and the loss-curve PNG."""

from __future__ import annotations

from lmforge.train.plots import diagnose, diagnose_run, plot_losses


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


def _records(**series):
    steps = max(len(values) for values in series.values())
    return [
        {"step": step + 1, **{key: values[step] for key, values in series.items() if step < len(values)}}
        for step in range(steps)
    ]


def test_grpo_is_judged_by_its_reward_not_its_surrogate_loss():
    """GRPO's loss is a policy-gradient surrogate near 0: rising from -0.000 to 0.226 it read as a good fit."""
    records = _records(
        loss=[-0.0, 0.05, 0.12, 0.18, 0.226],
        reward=[0.41, 0.40, 0.37, 0.35, 0.33],
        kl=[0.0, 0.002, 0.004, 0.006, 0.009],
    )
    verdict = diagnose_run(records, "rlhf")
    assert verdict.verdict == "not learning" and "mean reward 0.405 -> 0.350" in verdict.reason
    assert "KL to the reference 0.009" in verdict.reason
    rising = diagnose_run(_records(loss=[0.0] * 5, reward=[0.1, 0.2, 0.3, 0.4, 0.5]), "rlhf")
    assert rising.verdict == "learning"


def test_dpo_is_judged_by_reward_accuracy_and_margin_against_ln2():
    """DPO starts at ln 2 = 0.693 (policy = reference): 'still 0.702 of a starting 0.693' was no diagnosis."""
    stuck = _records(
        loss=[0.693, 0.699, 0.701, 0.702],
        **{"rewards/margins": [0.0, -0.01, -0.02, -0.01], "rewards/accuracies": [0.0, 0.4, 0.3, 0.4]},
    )
    verdict = diagnose_run(stuck, "dpo")
    assert verdict.verdict == "not learning"
    assert "reward accuracy 35% (chance 50%)" in verdict.reason and "against ln 2 = 0.693" in verdict.reason
    learned = _records(
        loss=[0.693, 0.62, 0.55, 0.5],
        **{"rewards/margins": [0.0, 0.1, 0.3, 0.4], "rewards/accuracies": [0.0, 0.6, 0.8, 0.9]},
    )
    learned.append({"step": 4, "eval_loss": 0.55, "eval_rewards/margins": 0.35, "eval_rewards/accuracies": 0.8})
    verdict = diagnose_run(learned, "dpo")
    assert verdict.verdict == "learning" and "on validation" in verdict.reason and "accuracy 80%" in verdict.reason
    assert "ln 2" not in diagnose_run(learned, "dpo", nll_in_loss=True).reason  # RPO's loss holds an NLL term


def test_reward_model_is_judged_by_pairwise_accuracy():
    chance = diagnose_run(_records(loss=[0.69, 0.69, 0.69, 0.69], accuracy=[0.5, 0.45, 0.5, 0.5]), "rm")
    assert chance.verdict == "not learning" and "pairwise accuracy 50% on training batches" in chance.reason
    learned = _records(loss=[0.69, 0.6, 0.5, 0.45], accuracy=[0.5, 0.7, 0.8, 0.85], margin=[0.0, 0.3, 0.6, 0.8])
    assert diagnose_run(learned, "rm").verdict == "learning"


def test_loss_stages_keep_the_seed_reading():
    records = _records(loss=[4.0, 3.0, 2.2, 1.6, 1.2, 1.0])
    assert diagnose_run(records, "sft").verdict == "good fit"
