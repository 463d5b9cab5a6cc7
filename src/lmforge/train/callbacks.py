"""What a user sees and keeps while a run trains: a rich progress bar, metrics.jsonl, a NaN guard.

All are transformers TrainerCallbacks, so every stage (Trainer or TRL trainer) gets them alike.
Early stopping and best-checkpoint tracking are transformers' own (EarlyStoppingCallback,
metric_for_best_model), wired in run.py.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_write_text


class TrainingDivergedError(LmforgeError):
    """The loss became NaN or infinite; continuing would only waste compute."""

    exit_code = 1


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (a kill mid-write) is skipped."""
    records: list[dict[str, Any]] = []
    file = Path(path)
    if not file.is_file():
        return records
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(path: str | os.PathLike[str], step: int) -> None:
    """On resume, forget records after the checkpoint's step: they are about to be recomputed."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


class MetricsFileCallback(TrainerCallback):
    """Appends every logged dict (train loss, lr, eval metrics) as one JSON line, with the step.

    One write() per line with O_APPEND, so a reader never sees an interleaved record; a torn
    last line after SIGKILL is skipped by read_metrics.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        record = {
            "step": state.global_step,
            "epoch": state.epoch,
            **logs,
            "tokens_seen": state.num_input_tokens_seen,
            "time": time.time(),
        }
        line = (json.dumps(record, default=float) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class NanGuardCallback(TrainerCallback):
    """Stops the run with a clear message when the training loss is NaN/inf."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDivergedError(
                f"loss became {loss} at step {state.global_step}: lower train.learning_rate, keep "
                "train.max_grad_norm > 0, or use precision bf16/fp32 instead of fp16"
            )


class ReplanScheduleCallback(TrainerCallback):
    """--resume with another length (train.max_steps, or epochs) than the checkpoint's schedule was planned over.

    transformers builds the schedule's function for the new length but restores the optimizer's learning rate
    from the checkpoint, so the first resumed step would run at the old schedule's rate and the later ones at
    the new one's. Before that first step, this sets the rate the re-planned schedule gives at the checkpoint's
    step, and says so (the warmup and peak stay the saved ones: run.py refuses to resume with others).
    """

    def __init__(self, saved_max_steps: int, schedule: str, say: Callable[[str], None]) -> None:
        self.saved_max_steps = saved_max_steps
        self.schedule = schedule
        self.say = say

    def on_train_begin(
        self, args: Any, state: Any, control: Any, optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any
    ) -> None:
        if state.max_steps == self.saved_max_steps or optimizer is None:
            return
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate wraps it
        lambdas = getattr(scheduler, "lr_lambdas", None)
        if lambdas is None:  # a DeepSpeed-owned scheduler: its state is DeepSpeed's to restore
            self.say(
                f"train.max_steps {self.saved_max_steps} -> {state.max_steps}: this scheduler cannot be "
                "re-planned; the learning rate follows the checkpoint's schedule"
            )
            return
        step = scheduler.last_epoch
        before = optimizer.param_groups[0]["lr"]
        rates = [base * function(step) for base, function in zip(scheduler.base_lrs, lambdas, strict=True)]
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        scheduler._last_lr = rates  # what get_last_lr() and the logged learning_rate report
        self.say(
            f"train.max_steps {self.saved_max_steps} -> {state.max_steps}: the {self.schedule} schedule is "
            f"re-planned over {state.max_steps} steps; step {step + 1} runs at learning rate {rates[0]:.3g} "
            f"(the checkpoint's schedule had {before:.3g})"
        )


class RichProgressCallback(TrainerCallback):
    """One progress bar: step/total, loss, learning rate, tokens/s and ETA."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None
        self._last_time = 0.0
        self._last_tokens = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, loss="-", lr="-", tps="-"
        )
        self._last_time, self._last_tokens = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.progress is None or not logs:
            return
        fields: dict[str, str] = {}
        if "loss" in logs:
            fields["loss"] = f"{float(logs['loss']):.4f}"
        if "learning_rate" in logs:
            fields["lr"] = f"{float(logs['learning_rate']):.2e}"
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        if tokens > self._last_tokens and now > self._last_time:
            fields["tps"] = f"{(tokens - self._last_tokens) / (now - self._last_time):,.0f}"
            self._last_time, self._last_tokens = now, tokens
        self.progress.update(self.task, **fields)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
