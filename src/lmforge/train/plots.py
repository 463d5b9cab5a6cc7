"""Loss curves and the diagnosis read from a run's metrics (the textbook reading: Goodfellow et al. 2016,
Deep Learning §5.2).

Underfitting = training and validation loss both high; overfitting = training loss
low but validation loss high (in practice: validation rising while training still falls); good
fit = both falling and close. "High" and "flat" need numbers, stated here once:
- flat: the last half of the training curve fell by less than FLAT_DROP of its value;
- high: the final training loss is above HIGH_SHARE of the first logged loss;
- rising: the last validation loss is RISE above its best while training loss kept falling.

That reading only fits a loss that starts high and should fall to near zero. Stages whose loss means
something else are judged by what measures them (`diagnose_run`), with the same overfitting check where
they have a validation loss:
- dpo, orpo: the implicit reward of the chosen answer beats the rejected one's (TRL's rewards/accuracies
  above CHANCE and rewards/margins above 0, on validation when there is one); DPO's loss starts at ln 2
  (policy = reference, Rafailov et al. 2023), so it is quoted against ln 2, not against its first value;
- kto: the chosen-minus-rejected reward margin rose above 0 (KTO logs no accuracy);
- rm: pairwise accuracy (chosen scored above rejected) above CHANCE, margin above 0;
- rlhf (GRPO/RLOO): the mean reward of the last half of the logged steps above the first half's; the KL
  to the reference is quoted. Their `loss` is a policy-gradient surrogate near 0 that need not fall.
Each compares a mean over the last half of the logged values (validation: the last evaluation), so one
noisy batch does not decide it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.fileio import atomic_save_figure

FLAT_DROP = 0.05
HIGH_SHARE = 0.5
RISE = 0.05
CHANCE = 0.5  # pairwise accuracy of a coin flip
MIN_POINTS = 4  # logged values needed before any verdict

Verdict = Literal["underfitting", "overfitting", "good fit", "learning", "not learning", "too short to tell"]


@dataclass(frozen=True)
class FitDiagnosis:
    verdict: Verdict
    reason: str


def curves(records: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, train loss) and (step, validation loss) points from metrics.jsonl records."""
    train = [(int(r["step"]), float(r["loss"])) for r in records if "loss" in r]
    val = [(int(r["step"]), float(r["eval_loss"])) for r in records if "eval_loss" in r]
    return train, val


def _overfitting(train: list[tuple[int, float]], val: list[tuple[int, float]]) -> FitDiagnosis | None:
    if len(val) < 3 or not train:
        return None
    last = train[-1][1]
    val_losses = [loss for _, loss in val]
    best_index = min(range(len(val_losses)), key=val_losses.__getitem__)
    best_step = val[best_index][0]
    train_at_best = min((loss for step, loss in train if step <= best_step), default=train[0][1])
    if val_losses[-1] > val_losses[best_index] * (1 + RISE) and last < train_at_best:
        return FitDiagnosis(
            "overfitting",
            f"validation loss rose from {val_losses[best_index]:.3f} (step {best_step}) to "
            f"{val_losses[-1]:.3f} while training loss fell to {last:.3f}: stop earlier, add data or regularise",
        )
    return None


def diagnose(train: list[tuple[int, float]], val: list[tuple[int, float]]) -> FitDiagnosis:
    """The three cases from the loss curves (see the module docstring for the thresholds)."""
    if len(train) < MIN_POINTS:
        return FitDiagnosis("too short to tell", f"only {len(train)} training losses logged (need {MIN_POINTS})")
    losses = [loss for _, loss in train]
    first, last = losses[0], losses[-1]
    half = losses[len(losses) // 2]
    if (overfit := _overfitting(train, val)) is not None:
        return overfit
    flat = (half - last) < FLAT_DROP * half
    high = last > HIGH_SHARE * first
    val_high = not val or val[-1][1] > HIGH_SHARE * first
    if flat and high and val_high:
        return FitDiagnosis(
            "underfitting",
            f"loss is still {last:.3f} of a starting {first:.3f} and stopped falling: train longer, "
            "raise the learning rate or use a larger model",
        )
    gap = f", validation {val[-1][1]:.3f}" if val else ""
    return FitDiagnosis("good fit", f"training loss fell from {first:.3f} to {last:.3f}{gap}")


def _series(records: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in records if isinstance(r.get(key), int | float) and math.isfinite(float(r[key]))]


def _late(values: list[float]) -> float:
    """The mean of the last half of the values."""
    tail = values[len(values) // 2 :]
    return sum(tail) / len(tail)


def _early(values: list[float]) -> float:
    head = values[: max(1, len(values) // 2)]
    return sum(head) / len(head)


def _judged(records: list[dict[str, Any]], key: str) -> tuple[float, str] | None:
    """A metric's late value: the last evaluation's when there is one, else the late training mean."""
    evaluated = _series(records, f"eval_{key}")
    if evaluated:
        return evaluated[-1], "on validation"
    trained = _series(records, key)
    return (_late(trained), "on training batches") if trained else None


def _preference(records: list[dict[str, Any]], stage: str, nll_in_loss: bool) -> FitDiagnosis:
    """dpo/orpo/kto: does the implicit reward prefer the chosen answer?"""
    margins = _series(records, "rewards/margins")
    if len(margins) < MIN_POINTS:
        return FitDiagnosis("too short to tell", f"only {len(margins)} reward margins logged (need {MIN_POINTS})")
    margin, where = _judged(records, "rewards/margins") or (0.0, "")
    accuracy = _judged(records, "rewards/accuracies")
    figures = f"reward margin {margin:.3f}" + (
        f", reward accuracy {accuracy[0]:.0%} (chance {CHANCE:.0%})" if accuracy else ""
    )
    losses = _series(records, "loss")
    if stage == "dpo" and losses and not nll_in_loss:
        figures += f"; DPO loss {_late(losses):.3f} against ln 2 = {math.log(2):.3f} where it starts"
    if stage == "kto":
        learning = margin > 0 and _late(margins) > _early(margins)
    else:
        learning = margin > 0 and (accuracy is None or accuracy[0] > CHANCE)
    if learning:
        return FitDiagnosis(
            "learning", f"the chosen answer's implicit reward beats the rejected one's {where}: {figures}"
        )
    return FitDiagnosis(
        "not learning",
        f"the chosen answer's implicit reward does not beat the rejected one's "
        f"{where}: {figures}; raise the learning rate or beta, or train longer",
    )


def _reward_model(records: list[dict[str, Any]]) -> FitDiagnosis:
    accuracies = _series(records, "accuracy") + _series(records, "eval_accuracy")
    if len(accuracies) < MIN_POINTS:
        return FitDiagnosis(
            "too short to tell", f"only {len(accuracies)} pairwise accuracies logged (need {MIN_POINTS})"
        )
    accuracy, where = _judged(records, "accuracy") or (0.0, "")
    margin = _judged(records, "margin")
    figures = f"pairwise accuracy {accuracy:.0%} {where} (chance {CHANCE:.0%})" + (
        f", margin {margin[0]:.3f}" if margin else ""
    )
    if accuracy > CHANCE and (margin is None or margin[0] > 0):
        return FitDiagnosis("learning", f"the reward model scores the chosen answer higher: {figures}")
    return FitDiagnosis(
        "not learning",
        f"the reward model ranks pairs no better than chance: {figures}; raise the learning rate or train longer",
    )


def _online_rl(records: list[dict[str, Any]]) -> FitDiagnosis:
    rewards = _series(records, "reward")
    if len(rewards) < MIN_POINTS:
        return FitDiagnosis("too short to tell", f"only {len(rewards)} mean rewards logged (need {MIN_POINTS})")
    before, after = _early(rewards), _late(rewards)
    kl = _series(records, "kl")
    figures = f"mean reward {before:.3f} -> {after:.3f} (first vs last half of the steps)" + (
        f", KL to the reference {kl[-1]:.3f}" if kl else ""
    )
    if after > before:
        return FitDiagnosis("learning", f"the reward rose: {figures}")
    return FitDiagnosis(
        "not learning",
        f"the reward did not rise: {figures}; raise the learning rate or the steps, or check the reward model",
    )


def diagnose_run(records: list[dict[str, Any]], stage: str, *, nll_in_loss: bool = False) -> FitDiagnosis:
    """The diagnosis of a run from its metrics.jsonl records, by what measures `stage` (module docstring).
    `nll_in_loss`: a DPO loss that also holds an NLL term (dpo.sft_weight), so it is not quoted against ln 2."""
    train, val = curves(records)
    if stage in ("dpo", "orpo", "kto", "rm") and (overfit := _overfitting(train, val)) is not None:
        return overfit
    if stage in ("dpo", "orpo", "kto"):
        return _preference(records, stage, nll_in_loss)
    if stage == "rm":
        return _reward_model(records)
    if stage == "rlhf":
        return _online_rl(records)
    return diagnose(train, val)


def plot_losses(records: list[dict[str, Any]], path: str | os.PathLike[str], title: str) -> Path | None:
    """A PNG of the training and validation loss curves; None when nothing was logged."""
    train, val = curves(records)
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train, strict=True), label="train loss")
    if val:
        axis.plot(*zip(*val, strict=True), marker="o", label="validation loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=100)
