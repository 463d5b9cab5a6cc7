"""Loss curves and the fit diagnosis read from them, after seed 001 §2.1.

Seed 001 §2.1: underfitting = training and validation loss both high; overfitting = training loss
low but validation loss high (in practice: validation rising while training still falls); good
fit = both falling and close. "High" and "flat" need numbers, stated here once:
- flat: the last half of the training curve fell by less than FLAT_DROP of its value;
- high: the final training loss is above HIGH_SHARE of the first logged loss;
- rising: the last validation loss is RISE above its best while training loss kept falling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.fileio import atomic_save_figure

FLAT_DROP = 0.05
HIGH_SHARE = 0.5
RISE = 0.05

Verdict = Literal["underfitting", "overfitting", "good fit", "too short to tell"]


@dataclass(frozen=True)
class FitDiagnosis:
    verdict: Verdict
    reason: str


def curves(records: list[dict[str, Any]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, train loss) and (step, validation loss) points from metrics.jsonl records."""
    train = [(int(r["step"]), float(r["loss"])) for r in records if "loss" in r]
    val = [(int(r["step"]), float(r["eval_loss"])) for r in records if "eval_loss" in r]
    return train, val


def diagnose(train: list[tuple[int, float]], val: list[tuple[int, float]]) -> FitDiagnosis:
    """The seed's three cases from the loss curves (see the module docstring for the thresholds)."""
    if len(train) < 4:
        return FitDiagnosis("too short to tell", f"only {len(train)} training losses logged (need 4)")
    losses = [loss for _, loss in train]
    first, last = losses[0], losses[-1]
    half = losses[len(losses) // 2]
    if len(val) >= 3:
        val_losses = [loss for _, loss in val]
        best_index = min(range(len(val_losses)), key=val_losses.__getitem__)
        best_step = val[best_index][0]
        train_at_best = min((loss for step, loss in train if step <= best_step), default=first)
        if val_losses[-1] > val_losses[best_index] * (1 + RISE) and last < train_at_best:
            return FitDiagnosis(
                "overfitting",
                f"validation loss rose from {val_losses[best_index]:.3f} (step {best_step}) to "
                f"{val_losses[-1]:.3f} while training loss fell to {last:.3f}: stop earlier, add data or regularise",
            )
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
