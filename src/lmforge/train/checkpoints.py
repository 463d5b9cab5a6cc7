"""Atomic checkpoints on top of the HF Trainer: only complete ones exist, the last K (+ best) are kept.

HF Trainer writes checkpoint-N in place, so a kill mid-save leaves a half folder that a resume
would trip on ("Can't find a valid checkpoint"). Here the Trainer writes into `.staging/` and the
finished folder is renamed into place (os.replace is atomic), so every `checkpoint-N` is complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lmforge.hub.reference import CHECKPOINT_NAME

STAGING = ".staging"


def list_checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints under `root`, oldest step first."""
    folder = Path(root)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def last_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def discard_incomplete(root: str | os.PathLike[str]) -> None:
    """Remove what an interrupted save left behind; it never counted as a checkpoint."""
    shutil.rmtree(Path(root) / STAGING, ignore_errors=True)


def rotate(root: Path, keep_last: int, best: str | None) -> None:
    """Delete all but the newest `keep_last` checkpoints, never the best one."""
    checkpoints = list_checkpoints(root)
    keep = set(checkpoints[-keep_last:])
    if best:
        keep.add(Path(best))
    for path in checkpoints:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)


# transformers pickles its whole TrainingArguments object here. Nothing reads it back (RUN/config.yaml
# records the run), and an arbitrary-class pickle can never pass the scanner, so lmforge drops it.
TRAINING_ARGS_PICKLE = "training_args.bin"


def drop_training_args_pickle(folder: Path) -> None:
    (folder / TRAINING_ARGS_PICKLE).unlink(missing_ok=True)


class AtomicCheckpointMixin:
    """Mixed in before any transformers/TRL Trainer class (see `atomic`)."""

    keep_last: int = 2
    _staging_save: bool = False

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_save:
            return os.path.join(self.args.output_dir, STAGING)  # type: ignore[attr-defined]
        return super()._get_output_dir(trial)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        root = Path(self.args.output_dir)  # type: ignore[attr-defined]
        name = f"checkpoint-{self.state.global_step}"  # type: ignore[attr-defined]
        staged, final = root / STAGING / name, root / name
        self._staging_save = True
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging_save = False
        state = self.state  # type: ignore[attr-defined]
        if state.best_model_checkpoint and Path(state.best_model_checkpoint) == staged:
            state.best_model_checkpoint = str(final)
        accelerator = self.accelerator  # type: ignore[attr-defined]
        accelerator.wait_for_everyone()  # every rank has written its RNG state into the staged folder
        if self.args.should_save:  # type: ignore[attr-defined]
            state.save_to_json(str(staged / "trainer_state.json"))
            drop_training_args_pickle(staged)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            shutil.rmtree(root / STAGING, ignore_errors=True)
            rotate(root, self.keep_last, state.best_model_checkpoint)
        accelerator.wait_for_everyone()


def atomic(trainer_class: type, keep_last: int) -> type:
    """`trainer_class` with atomic, rotated checkpoints."""
    return type(f"Atomic{trainer_class.__name__}", (AtomicCheckpointMixin, trainer_class), {"keep_last": keep_last})
