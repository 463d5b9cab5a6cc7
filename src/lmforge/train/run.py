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

from lmforge.errors import DependencyError, UserInputError
from lmforge.fileio import atomic_directory, atomic_write_json, atomic_write_text, writable_folder
from lmforge.train import checkpoints
from lmforge.train.callbacks import MetricsFileCallback, NanGuardCallback, ReplanScheduleCallback, RichProgressCallback
from lmforge.train.callbacks import read_metrics, truncate_metrics
from lmforge.train.config import TrainConfig, config_to_yaml
from lmforge.train.context import StageContext, stage_module, training_arguments
from lmforge.train.launch import check_launched_sharding
from lmforge.train.loading import BPE_PREFIX, FROZEN_BASE_METHODS, HEADS, resolve_model_folder, trusted
from lmforge.train.methods import ParamCount, apply_method, check_method_hardware, count_params
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

    def to_json(self) -> dict[str, Any]:
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
        return cls(**{**known, "run_dir": Path(data["run_dir"]), "final_dir": Path(data["final_dir"]),
                      "checkpoints": [Path(p) for p in known.get("checkpoints", [])],
                      "best_checkpoint": Path(best) if best else None,
                      "diagnosis": FitDiagnosis(**diagnosis) if diagnosis else None})


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _console(progress: bool) -> Any:
    from rich.console import Console

    return Console(quiet=not progress or not _is_main_process())


# What a resumed run may not change: the checkpoint's weights and data position only mean something
# for the same model, data and method (more steps, a new eval cadence or patience are fine).
FIXED_ON_RESUME = ("stage", "init_from", "model", "data", "method", "dpo", "rlhf", "distill", "mlm")
# ... nor what the restored optimizer, scheduler and data position decide: transformers restores the learning
# rate, schedule and weight decay from the checkpoint whatever the config says, and the batch size, accumulation
# and seed fix which examples the resumed steps skip and see. auto_fit chooses the batch for its target GPU.
RESTORED_ON_RESUME = ("train.learning_rate", "train.lr_scheduler", "train.warmup_steps", "train.weight_decay",
                      "train.micro_batch_size", "train.grad_accum", "train.seed", "train.auto_fit",
                      "train.target_gpu", "train.global_batch_size")
_AUTO_FIT_CHOICES = ("train.micro_batch_size", "train.grad_accum", "train.gradient_checkpointing")


def _changed_keys(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new))
                for k in _changed_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)]
    return [] if old == new else [prefix]


def _value(config: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None  # type: ignore[assignment]
    return config


def _check_same_run(config: TrainConfig, run_dir: Path) -> None:
    """--resume continues the saved run: a change it could not honour is refused, every key named."""
    import yaml

    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    current = config.model_dump(mode="json")
    changed = [k for section in FIXED_ON_RESUME for k in _changed_keys(saved.get(section), current.get(section), section)]
    auto_fitted = _value(saved, "train.auto_fit") and current["train"]["auto_fit"]  # the planner chose these again
    changed += [key for key in RESTORED_ON_RESUME if _value(saved, key) != _value(current, key)
                and not (auto_fitted and key in _AUTO_FIT_CHOICES)]
    if changed:
        shown = ", ".join(f"{key} ({_value(saved, key)!r} -> {_value(current, key)!r})" if key.startswith("train.")
                          else key for key in changed)
        raise UserInputError(
            f"--resume: {shown} differ from {saved_file}: the checkpoint's weights, data position, optimizer and "
            f"schedule were made under the saved values; resume with them, or start a new run from this one's "
            f"weights with init_from: {run_dir}"
        )


def finished_run(config: TrainConfig) -> RunResult | None:
    """The saved result when `config.out` holds a finished run that `config` asks no more steps of: --resume
    then has nothing to do and must leave final/ and result.json alone. None when there is training left.
    A change --resume cannot honour is refused first (_check_same_run), finished or not."""
    import json

    import yaml

    run_dir = Path(config.out)
    result_file = run_dir / "result.json"
    if not result_file.is_file() or not (run_dir / "final").is_dir():
        return None
    _check_same_run(config, run_dir)
    result = RunResult.from_json(json.loads(result_file.read_text(encoding="utf-8")))
    if config.train.max_steps is not None:
        return result if config.train.max_steps <= result.steps else None
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    same_length = _value(saved, "train.max_steps") is None and _value(saved, "train.epochs") == config.train.epochs
    return result if same_length else None


def nothing_to_resume(result: RunResult, config: TrainConfig) -> str:
    """The one line --resume prints for a finished run."""
    train = config.train
    asked = f"train.max_steps {train.max_steps}" if train.max_steps else f"train.epochs {train.epochs}"
    return (f"{result.run_dir}: the run finished at step {result.steps} and {asked} asks for no more; --resume has "
            "nothing to do (final/ and result.json are unchanged). Raise train.max_steps to train on, or start a new "
            f"run from its weights with init_from: {result.run_dir}")


def _check_steps_left(config: TrainConfig, checkpoint: Path) -> None:
    """A checkpoint already past max_steps cannot be resumed to it (transformers would train one step more)."""
    step = int(checkpoint.name.split("-")[1])
    if config.train.max_steps is not None and config.train.max_steps < step:
        raise UserInputError(
            f"--resume: train.max_steps {config.train.max_steps} is below the step of {checkpoint} ({step}); a run "
            f"cannot be resumed backwards: raise train.max_steps, or start a new run from that checkpoint's weights "
            f"with init_from: {checkpoint}"
        )


def _saved_max_steps(checkpoint: Path) -> int | None:
    """The total steps the checkpoint's schedule was planned over (transformers' trainer_state.json)."""
    import json

    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_sources(config: TrainConfig) -> None:
    """Every model folder the run will read exists, checked before the run folder is touched."""
    from lmforge.errors import NotFoundError, join_problems

    folders = {"init_from": config.init_from, "model.path": config.model.path,
               "rlhf.reward_model": config.rlhf.reward_model if config.stage == "rlhf" else None,
               "distill.teacher": config.distill.teacher if config.stage == "distill" else None}
    problems = []
    for key, source in folders.items():
        if source is None:
            continue
        try:
            resolve_model_folder(source, **trusted(config))
        except NotFoundError as error:
            problems.append(f"{key}: {error}")
    tokenizer = config.model.tokenizer
    if tokenizer is not None and not tokenizer.startswith(BPE_PREFIX) and not Path(tokenizer).is_dir():
        problems.append(f"model.tokenizer: folder {config.model.tokenizer} does not exist")
    if problems:
        raise NotFoundError(join_problems(problems))


def check_run_folder(config: TrainConfig, resume: bool) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from): stops before anything runs when the sources are missing,
    --resume has nothing to continue, a new run would overwrite a finished one, or the folder cannot be
    written. Writes nothing but the (empty) run folder itself."""
    _check_sources(config)
    run_dir = Path(config.out)
    checkpoint_root = run_dir / "checkpoints"
    if resume:
        last = checkpoints.last_checkpoint(checkpoint_root)
        if last is None:
            raise UserInputError(
                f"--resume: {checkpoint_root} holds no complete checkpoint (set train.save_every); "
                "run without --resume to start over"
            )
        _check_same_run(config, run_dir)
        _check_steps_left(config, last)
        return writable_folder(run_dir, setting="out"), last
    if checkpoints.list_checkpoints(checkpoint_root) or (run_dir / "final").exists():
        raise UserInputError(
            f"out: {run_dir} already holds a run; pass --resume to continue it, choose a new out folder, "
            f"or set init_from: {run_dir} to start a new run from its weights"
        )
    return writable_folder(run_dir, setting="out"), None


def _data_line(config: TrainConfig, data: DataSummary) -> str:
    validation = config.data.eval or f"held out, eval_fraction {config.data.eval_fraction}"
    if "eval" not in data.splits:
        validation = "none"
    return f"""- Data: {config.data.train} (validation: {validation})
- Training data as trained on: {data.describe("train")}; template {data.template or "none"} \
(RUN/data/summary.json)"""


def _model_card(config: TrainConfig, result: RunResult, task: str, data: DataSummary) -> str:
    metrics = "\n".join(f"| {k} | {v:.6g} |" for k, v in result.final_metrics.items()) or "| - | - |"
    base = config.init_from or config.model.path or f"from scratch ({config.model.config.get('model_type')})"
    adapter = config.method.name in FROZEN_BASE_METHODS and not _merges_adapter(config, task)
    head = HEADS[task].removeprefix("Auto")  # type: ignore[index]
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


def _merges_adapter(config: TrainConfig, task: str) -> bool:
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


def _check_trackers(report_to: list[str]) -> None:
    """A tracker's package must be installed: transformers would only fail once the model is loaded."""
    import importlib.util

    missing = [name for name in report_to if importlib.util.find_spec(name) is None]
    if missing:
        raise DependencyError(f"train.report_to: {', '.join(missing)} is not installed: pip install "
                              f"{' '.join(missing)}" + (" (WANDB_MODE=offline keeps a run on this machine)"
                                                        if "wandb" in missing else ""))


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
    check_method_hardware(config.method)  # qlora on a CPU stops here, before anything loads
    check_launched_sharding()  # an FSDP/DeepSpeed launch on a CPU would otherwise quietly run plain DDP
    _check_trackers(config.train.report_to)
    from transformers import EarlyStoppingCallback, PrinterCallback, set_seed

    from lmforge.train.loading import load_model

    console = _console(progress)
    if resume and (done := finished_run(config)) is not None:
        console.print(nothing_to_resume(done, config))
        return done
    run_dir, resume_from = check_run_folder(config, resume)
    checkpoint_root = run_dir / "checkpoints"
    main = _is_main_process()
    if main:
        checkpoints.discard_incomplete(checkpoint_root)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
        if resume_from is not None:
            truncate_metrics(run_dir / "metrics.jsonl", int(resume_from.name.split("-")[1]))
        else:
            atomic_write_text(run_dir / "metrics.jsonl", "")

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
        fit = auto_fit(config, model_config, world_size, num_labels=num_labels)
        config = config.model_copy(update={"train": config.train.model_copy(update={
            "micro_batch_size": fit.micro_batch_size, "grad_accum": fit.grad_accum,
            "gradient_checkpointing": fit.gradient_checkpointing})})
        console.print(f"auto_fit for {config.train.target_gpu}: micro-batch {fit.micro_batch_size} x "
                      f"accumulation {fit.grad_accum}, recompute {'full' if fit.gradient_checkpointing else 'none'}")
        if main:
            atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
    planned = plan_run(config, model_config, world_size, num_labels=num_labels)
    model = load_model(config, stage.TASK, tokenizer, num_labels=num_labels, label_names=label_names)
    if data.summary.packed:
        from lmforge.train.packing import verify_packing

        # Before any step: packed examples must not see each other in this model (else the run stops here).
        console.print(f"packing: {data.summary.splits['train'].examples_out:,} examples in "
                      f"{data.summary.splits['train'].sequences:,} rows of up to {config.data.max_len} tokens "
                      f"(checked: packed logits within {verify_packing(model):.1e} of unpacked)")
    _record_base(config, model, tokenizer, run_dir, main)
    model = apply_method(model, config.method, stage.TASK, gradient_checkpointing=config.train.gradient_checkpointing)

    counted: ParamCount = count_params(model)
    # The planner prices causal LMs, reward models and classifiers with their own heads (not MLM heads).
    predicted_trainable = planned.get("model", {}).get("params_trainable") if stage.TASK != "mlm" else None
    plan = {"stage": config.stage, "method": config.method.name, "planner": planned,
            "actual": {"trainable_params": counted.trainable_params, "total_params": counted.total_params}}
    planned_text = f" (planner: {predicted_trainable:,} trainable)" if predicted_trainable is not None else ""
    console.print(f"[bold]{config.stage}[/] / {config.method.name}: {counted}{planned_text}")
    if main:
        atomic_write_json(run_dir / "plan.json", plan)

    callbacks: list[Any] = []
    if main:
        callbacks.append(MetricsFileCallback(run_dir / "metrics.jsonl"))
    if config.train.nan_guard:
        callbacks.append(NanGuardCallback())
    if progress and main:
        callbacks.append(RichProgressCallback())
    evaluating = data.eval is not None and config.train.eval_every is not None
    if config.train.early_stopping.patience and evaluating:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping.patience))
    notes: list[str] = []
    if resume_from is not None and (saved_steps := _saved_max_steps(resume_from)) is not None:
        def note(text: str) -> None:
            notes.append(text)
            console.print(f"note: {text}")

        callbacks.append(ReplanScheduleCallback(saved_steps, config.train.lr_scheduler, note))

    if "tensorboard" in config.train.report_to:
        # transformers 5 reads the TensorBoard folder from this variable only; lmforge keeps it in the run.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "logs")
    if "wandb" in config.train.report_to:
        os.environ.setdefault("WANDB_DIR", str(run_dir / "logs"))  # wandb's local files stay in the run folder
    ctx = StageContext(
        config=config, model=model, tokenizer=tokenizer, train_dataset=data.train, eval_dataset=data.eval,
        args=training_arguments(config, run_dir, has_eval=data.eval is not None), callbacks=callbacks,
    )
    trainer = stage.build_trainer(ctx)
    trainer.remove_callback(PrinterCallback)  # the rich bar and metrics.jsonl replace raw dict printing

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
    if data.eval is not None:
        final_metrics.update(_numbers(trainer.evaluate()))
    if torch.cuda.is_available():
        final_metrics["peak_memory_bytes"] = float(torch.cuda.max_memory_allocated())
        plan["actual"]["peak_memory_bytes"] = final_metrics["peak_memory_bytes"]
        planned_peak = planned.get("memory", {}).get("per_gpu_bytes")
        console.print(f"GPU memory: planned {planned_peak or 0:,} bytes, measured peak "
                      f"{int(final_metrics['peak_memory_bytes']):,} bytes (torch.cuda.max_memory_allocated)")

    final_dir = run_dir / "final"
    result = RunResult(
        run_dir=run_dir, final_dir=final_dir, stage=config.stage, method=config.method.name,
        steps=trainer.state.global_step, final_metrics=final_metrics,
        trainable_params=counted.trainable_params, total_params=counted.total_params,
        planned_trainable_params=predicted_trainable,
        checkpoints=checkpoints.list_checkpoints(checkpoint_root),
        best_checkpoint=Path(trainer.state.best_model_checkpoint) if trainer.state.best_model_checkpoint else None,
        chat_template=template_name, notes=notes,
    )
    if main:
        records = read_metrics(run_dir / "metrics.jsonl")
        result.diagnosis = diagnose_run(records, config.stage, nll_in_loss=config.dpo.sft_weight > 0)
        plot_losses(records, run_dir / "plots" / "loss.png", f"{config.stage} / {config.method.name}")
        _save_final(trainer, tokenizer, final_dir, _model_card(config, result, stage.TASK, data.summary),
                    merge=_merges_adapter(config, stage.TASK))
        atomic_write_json(run_dir / "plan.json", plan)
        atomic_write_json(run_dir / "result.json", result.to_json())
        console.print(f"diagnosis: {result.diagnosis.verdict} ({result.diagnosis.reason})")
        console.print(f"final model: {final_dir}")
    return result
