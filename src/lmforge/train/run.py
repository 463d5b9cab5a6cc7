"""run_training: one config in, one run folder out.

RUN/
  config.yaml      the resolved config (after --set overrides)
  plan.json        what the planner predicted (trainable/total params, memory) next to what ran
  data/            the train/eval sets as trained on, tokenized once, + summary.json (prepare.py)
  metrics.jsonl    every logged loss, learning rate and eval metric, one JSON line each
  plots/loss.png   train and validation loss, with the fit diagnosis in result.json
  checkpoints/     checkpoint-N folders, complete or absent (atomic), last K + best kept
  final/           the model or adapter (safetensors) + tokenizer + README.md model card
  result.json      the RunResult below
Other capabilities load models from RUN/final.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.fileio import atomic_directory, atomic_write_json, atomic_write_text
from lmforge.train import checkpoints, preflight
from lmforge.train.callbacks import (
    MetricsFileCallback,
    NanGuardCallback,
    ReplanScheduleCallback,
    RichProgressCallback,
    read_metrics,
    truncate_metrics,
)
from lmforge.train.config import TrainConfig, config_to_yaml
from lmforge.train.context import StageContext, stage_module, training_arguments
from lmforge.train.loading import FROZEN_BASE_METHODS, HEADS, resolve_model_folder, trusted
from lmforge.train.methods import ParamCount, Task, apply_method, count_model_params
from lmforge.train.planning import auto_fit, hf_config, plan_run
from lmforge.train.plots import FitDiagnosis, diagnose_run, plot_losses
from lmforge.train.prepare import DataSummary, prepare_data, run_tokenizer


@dataclass
class RunResult:
    run_dir: Path
    final_dir: Path
    stage: str
    method: str
    steps: int
    final_metrics: dict[str, float]
    trainable_params: int
    total_params: int
    planned_trainable_params: int | None
    checkpoints: list[Path] = field(default_factory=list)
    best_checkpoint: Path | None = None
    diagnosis: FitDiagnosis | None = None
    chat_template: str | None = None  # the template trained with, saved in final/'s tokenizer
    notes: list[str] = field(default_factory=list)  # what the run decided that the user should know

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("run_dir", "final_dir", "best_checkpoint"):
            data[key] = str(data[key]) if data[key] is not None else None
        data["checkpoints"] = [str(p) for p in self.checkpoints]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """A RunResult read back from RUN/result.json (older files lack the newer fields)."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        diagnosis = known.get("diagnosis")
        best = known.get("best_checkpoint")
        return cls(
            **{
                **known,
                "run_dir": Path(data["run_dir"]),
                "final_dir": Path(data["final_dir"]),
                "checkpoints": [Path(p) for p in known.get("checkpoints", [])],
                "best_checkpoint": Path(best) if best else None,
                "diagnosis": FitDiagnosis(**diagnosis) if diagnosis else None,
            }
        )


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _console(progress: bool) -> Any:
    from rich.console import Console

    return Console(quiet=not progress or not _is_main_process())


def finished_run(config: TrainConfig) -> RunResult | None:
    """The saved result when `config.out` holds a finished run that `config` asks no more steps of: --resume
    then has nothing to do and must leave final/ and result.json alone. None when there is training left.
    A change --resume cannot honour is refused first (preflight.check_same_run), finished or not."""
    import json

    import yaml

    run_dir = Path(config.out)
    result_file = run_dir / "result.json"
    if not result_file.is_file() or not (run_dir / "final").is_dir():
        return None
    preflight.check_same_run(config, run_dir)
    result = RunResult.from_json(json.loads(result_file.read_text(encoding="utf-8")))
    if config.train.max_steps is not None:
        return result if config.train.max_steps <= result.steps else None
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    same_length = (
        preflight.saved_value(saved, "train.max_steps") is None
        and preflight.saved_value(saved, "train.epochs") == config.train.epochs
    )
    return result if same_length else None


def nothing_to_resume(result: RunResult, config: TrainConfig) -> str:
    """The one line --resume prints for a finished run."""
    train = config.train
    asked = f"train.max_steps {train.max_steps}" if train.max_steps else f"train.epochs {train.epochs}"
    return (
        f"{result.run_dir}: the run finished at step {result.steps} and {asked} asks for no more; --resume has "
        "nothing to do (final/ and result.json are unchanged). Raise train.max_steps to train on, or start a new "
        f"run from its weights with init_from: {result.run_dir}"
    )


def _saved_max_steps(checkpoint: Path) -> int | None:
    """The total steps the checkpoint's schedule was planned over (transformers' trainer_state.json)."""
    import json

    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _data_line(config: TrainConfig, data: DataSummary) -> str:
    validation = config.data.eval or f"held out, eval_fraction {config.data.eval_fraction}"
    if "eval" not in data.splits:
        validation = "none"
    return f"""- Data: {config.data.train} (validation: {validation})
- Training data as trained on: {data.describe("train")}; template {data.template or "none"} \
(RUN/data/summary.json)"""


def _model_card(config: TrainConfig, result: RunResult, task: Task, data: DataSummary) -> str:
    metrics = "\n".join(f"| {k} | {v:.6g} |" for k, v in result.final_metrics.items()) or "| - | - |"
    base = config.init_from or config.model.path or f"from scratch ({(config.model.config or {}).get('model_type')})"
    adapter = config.method.name in FROZEN_BASE_METHODS and not _merges_adapter(config, task)
    head = HEADS[task].removeprefix("Auto")
    load = (
        f"from peft import AutoPeft{head}\nmodel = AutoPeft{head}.from_pretrained('{result.final_dir}')"
        if adapter
        else f"from transformers import Auto{head}\nmodel = Auto{head}.from_pretrained('{result.final_dir}')"
    )
    diagnosis = f"{result.diagnosis.verdict}: {result.diagnosis.reason}" if result.diagnosis else "-"
    return f"""---
library_name: {"peft" if adapter else "transformers"}
tags: [lmforge, {config.stage}, {config.method.name}]
---
# {result.run_dir.name}

Trained with `lmforge train` (stage **{config.stage}**, method **{config.method.name}**).

- Base model: {base}
{_data_line(config, data)}
- Steps: {result.steps} (micro-batch {config.train.micro_batch_size}, grad accumulation {config.train.grad_accum}, \
learning rate {config.train.learning_rate}, {config.train.lr_scheduler} schedule, seed {config.train.seed})
- Trainable parameters: {result.trainable_params:,} of {result.total_params:,}
- Chat template: {result.chat_template or "none (plain text)"} (saved with the tokenizer; serve with the same)
- Diagnosis: {diagnosis}

## Final metrics

| metric | value |
|---|---|
{metrics}

## Load

```python
{load}
```
"""


def _record_base(config: TrainConfig, model: Any, tokenizer: Any, run_dir: Path, main: bool) -> None:
    """Make the adapter in final/ name the exact base it was trained on, as an absolute path.

    A start from an adapter (an earlier LoRA run) is merged into its base in memory; no folder holds
    that model, so it is saved as RUN/base. Otherwise final/ would point at the original base and a
    loader would silently get a model without the earlier run's training.
    """
    source = config.init_from or config.model.path
    if source is None or config.method.name not in FROZEN_BASE_METHODS:
        return
    folder = resolve_model_folder(source, **trusted(config))
    if (folder / "config.json").is_file():
        model.name_or_path = str(folder.resolve())
        return
    base_dir = (run_dir / "base").resolve()
    if main:
        with atomic_directory(base_dir) as temporary:
            model.save_pretrained(str(temporary))
            tokenizer.save_pretrained(str(temporary))
    model.name_or_path = str(base_dir)


def _merges_adapter(config: TrainConfig, task: Task) -> bool:
    """A LoRA classifier/reward head is merged: its num_labels and label names live in the model config,
    which an adapter folder does not carry, so loaders would silently get a 2-label LABEL_0/1 head."""
    return task == "classify" and config.method.name == "lora"


def _save_final(trainer: Any, tokenizer: Any, final_dir: Path, model_card: str, merge: bool) -> None:
    """Weights (safetensors), tokenizer and model card appear together or not at all."""
    with atomic_directory(final_dir) as temporary:
        if merge:
            trainer.model.merge_and_unload().save_pretrained(str(temporary))
        else:
            trainer.save_model(str(temporary))
            checkpoints.drop_training_args_pickle(temporary)
        tokenizer.save_pretrained(str(temporary))
        atomic_write_text(temporary / "README.md", model_card)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(float(v))}


def _finish_from(trainer: Any, checkpoint: Path) -> dict[str, float]:
    """Load a checkpoint that is already at max_steps, without training: resumed there, transformers would
    skip the epoch's trained batches and then train one step past max_steps before it checks the count."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))  # the weights, as trainer.train(resume_from_checkpoint) loads them
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return {}


def run_training(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> RunResult:
    """Train as `config` says, into the run folder `config.out`; `resume` continues its last checkpoint.

    Raises an LmforgeError (before any model loads where possible) for anything the user can fix.
    """
    preflight.check_environment(config)
    console = _console(progress)
    if resume and (done := finished_run(config)) is not None:
        console.print(nothing_to_resume(done, config))
        return done
    run_dir, resume_from = preflight.check_run_folder(config, resume)
    main = _is_main_process()
    if main:
        _start_run_folder(config, run_dir, resume_from)

    from transformers import set_seed

    stage = stage_module(config.stage)
    set_seed(config.train.seed)
    tokenizer, template_name = run_tokenizer(config, run_dir, main)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    model_config = hf_config(config, tokenizer)
    data = prepare_data(config, tokenizer, template_name, run_dir, main=main)
    console.print(f"data: {'reused' if data.reused else 'prepared'} {run_dir / 'data'}: {data.summary.describe()}")
    label_names = data.summary.label_names
    num_labels = getattr(stage, "NUM_LABELS", len(label_names) if label_names else None)
    if config.train.auto_fit:
        config = _auto_fit(config, model_config, world_size, num_labels, console)
        if main:
            atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
    planned = plan_run(config, model_config, world_size, num_labels=num_labels)
    model = _load_trainable_model(config, stage.TASK, tokenizer, data, num_labels, run_dir, main, console)
    counted: ParamCount = count_model_params(model)
    plan, predicted_trainable = _plan_record(config, stage.TASK, planned, counted, console)
    if main:
        atomic_write_json(run_dir / "plan.json", plan)

    notes: list[str] = []
    callbacks = _callbacks(config, run_dir, main, progress, data.eval is not None, resume_from, console, notes)
    _point_trackers_at(config, run_dir)
    ctx = StageContext(
        config=config,
        model=model,
        tokenizer=tokenizer,
        train_dataset=data.train,
        eval_dataset=data.eval,
        args=training_arguments(config, run_dir, has_eval=data.eval is not None),
        callbacks=callbacks,
    )
    trainer = stage.build_trainer(ctx)
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the rich bar and metrics.jsonl replace raw dict printing
    final_metrics = _train(trainer, config, resume_from, data.eval is not None, console)
    if "peak_memory_bytes" in final_metrics:
        plan["actual"]["peak_memory_bytes"] = final_metrics["peak_memory_bytes"]
        planned_peak = planned.get("memory", {}).get("per_gpu_bytes")
        console.print(
            f"GPU memory: planned {planned_peak or 0:,} bytes, measured peak "
            f"{int(final_metrics['peak_memory_bytes']):,} bytes (torch.cuda.max_memory_allocated)"
        )

    final_dir = run_dir / "final"
    result = RunResult(
        run_dir=run_dir,
        final_dir=final_dir,
        stage=config.stage,
        method=config.method.name,
        steps=trainer.state.global_step,
        final_metrics=final_metrics,
        trainable_params=counted.trainable_params,
        total_params=counted.total_params,
        planned_trainable_params=predicted_trainable,
        checkpoints=checkpoints.list_checkpoints(run_dir / "checkpoints"),
        best_checkpoint=Path(trainer.state.best_model_checkpoint) if trainer.state.best_model_checkpoint else None,
        chat_template=template_name,
        notes=notes,
    )
    if main:
        _finish_run_folder(config, result, trainer, tokenizer, stage.TASK, data.summary, plan, console)
    return result


def _start_run_folder(config: TrainConfig, run_dir: Path, resume_from: Path | None) -> None:
    """The folder as a run starts it: incomplete checkpoints gone, config.yaml written, metrics.jsonl empty or
    cut back to the checkpoint it resumes."""
    checkpoints.discard_incomplete(run_dir / "checkpoints")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
    if resume_from is not None:
        truncate_metrics(run_dir / "metrics.jsonl", int(resume_from.name.split("-")[1]))
    else:
        atomic_write_text(run_dir / "metrics.jsonl", "")


def _auto_fit(
    config: TrainConfig, model_config: Any, world_size: int, num_labels: int | None, console: Any
) -> TrainConfig:
    """The config with the planner's micro-batch, accumulation and recomputation for train.target_gpu."""
    fit = auto_fit(config, model_config, world_size, num_labels=num_labels)
    console.print(
        f"auto_fit for {config.train.target_gpu}: micro-batch {fit.micro_batch_size} x "
        f"accumulation {fit.grad_accum}, recompute {'full' if fit.gradient_checkpointing else 'none'}"
    )
    return config.model_copy(
        update={
            "train": config.train.model_copy(
                update={
                    "micro_batch_size": fit.micro_batch_size,
                    "grad_accum": fit.grad_accum,
                    "gradient_checkpointing": fit.gradient_checkpointing,
                }
            )
        }
    )


def _load_trainable_model(
    config: TrainConfig,
    task: Task,
    tokenizer: Any,
    data: Any,
    num_labels: int | None,
    run_dir: Path,
    main: bool,
    console: Any,
) -> Any:
    """The starting model with only the method's parameters trainable; packing checked on it first."""
    from lmforge.train.loading import load_training_model

    model = load_training_model(config, task, tokenizer, num_labels=num_labels, label_names=data.summary.label_names)
    if data.summary.packed:
        from lmforge.train.packing import verify_packing

        # Before any step: packed examples must not see each other in this model (else the run stops here).
        console.print(
            f"packing: {data.summary.splits['train'].examples_out:,} examples in "
            f"{data.summary.splits['train'].sequences:,} rows of up to {config.data.max_len} tokens "
            f"(checked: packed logits within {verify_packing(model):.1e} of unpacked)"
        )
    _record_base(config, model, tokenizer, run_dir, main)
    return apply_method(model, config.method, task, gradient_checkpointing=config.train.gradient_checkpointing)


def _plan_record(
    config: TrainConfig, task: Task, planned: dict[str, Any], counted: ParamCount, console: Any
) -> tuple[dict[str, Any], int | None]:
    """plan.json (the planner's prediction next to what this run counts, and later measures), and the trainable
    count the planner predicted."""
    # The planner prices causal LMs, reward models and classifiers with their own heads (not MLM heads).
    predicted = planned.get("model", {}).get("params_trainable") if task != "mlm" else None
    planned_text = f" (planner: {predicted:,} trainable)" if predicted is not None else ""
    console.print(f"[bold]{config.stage}[/] / {config.method.name}: {counted}{planned_text}")
    plan = {
        "stage": config.stage,
        "method": config.method.name,
        "planner": planned,
        "actual": {"trainable_params": counted.trainable_params, "total_params": counted.total_params},
    }
    return plan, predicted


def _callbacks(
    config: TrainConfig,
    run_dir: Path,
    main: bool,
    progress: bool,
    has_eval: bool,
    resume_from: Path | None,
    console: Any,
    notes: list[str],
) -> list[Any]:
    """metrics.jsonl, the NaN guard, the progress bar, early stopping, and a resumed schedule's re-plan note."""
    from transformers import EarlyStoppingCallback

    callbacks: list[Any] = []
    if main:
        callbacks.append(MetricsFileCallback(run_dir / "metrics.jsonl"))
    if config.train.nan_guard:
        callbacks.append(NanGuardCallback())
    if progress and main:
        callbacks.append(RichProgressCallback())
    if config.train.early_stopping.patience and has_eval and config.train.eval_every is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping.patience))
    if resume_from is not None and (saved_steps := _saved_max_steps(resume_from)) is not None:

        def note(text: str) -> None:
            notes.append(text)
            console.print(f"note: {text}")

        callbacks.append(ReplanScheduleCallback(saved_steps, config.train.lr_scheduler, note))
    return callbacks


def _point_trackers_at(config: TrainConfig, run_dir: Path) -> None:
    """The trackers' local files stay in the run folder (RUN/logs)."""
    if "tensorboard" in config.train.report_to:
        # transformers 5 reads the TensorBoard folder from this variable only; lmforge keeps it in the run.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "logs")
    if "wandb" in config.train.report_to:
        os.environ.setdefault("WANDB_DIR", str(run_dir / "logs"))  # wandb's local files stay in the run folder


def _train(
    trainer: Any, config: TrainConfig, resume_from: Path | None, has_eval: bool, console: Any
) -> dict[str, float]:
    """Train (or resume), evaluate, and measure the peak GPU memory: the run's final metrics."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if resume_from:
        from lmforge.files.safe_load import require_safe

        # The Trainer unpickles optimizer, scheduler and RNG state (weights_only); scan them first.
        require_safe(resume_from)
    if resume_from is not None and int(resume_from.name.split("-")[1]) == config.train.max_steps:
        final_metrics = _finish_from(trainer, resume_from)
        console.print(f"{resume_from} is at train.max_steps {config.train.max_steps}: final/ is written from it")
    else:
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        final_metrics = _numbers(output.metrics)
    if has_eval:
        final_metrics.update(_numbers(trainer.evaluate()))
    if torch.cuda.is_available():
        final_metrics["peak_memory_bytes"] = float(torch.cuda.max_memory_allocated())
    return final_metrics


def _finish_run_folder(
    config: TrainConfig,
    result: RunResult,
    trainer: Any,
    tokenizer: Any,
    task: Task,
    data: DataSummary,
    plan: dict[str, Any],
    console: Any,
) -> None:
    """The diagnosis, the loss plot, final/ with its model card, plan.json and result.json."""
    records = read_metrics(result.run_dir / "metrics.jsonl")
    result.diagnosis = diagnose_run(records, config.stage, nll_in_loss=config.dpo.sft_weight > 0)
    plot_losses(records, result.run_dir / "plots" / "loss.png", f"{config.stage} / {config.method.name}")
    _save_final(
        trainer,
        tokenizer,
        result.final_dir,
        _model_card(config, result, task, data),
        merge=_merges_adapter(config, task),
    )
    atomic_write_json(result.run_dir / "plan.json", plan)
    atomic_write_json(result.run_dir / "result.json", result.to_dict())
    console.print(f"diagnosis: {result.diagnosis.verdict} ({result.diagnosis.reason})")
    console.print(f"final model: {result.final_dir}")
