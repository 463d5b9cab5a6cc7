"""Everything that can fail before a model loads, checked in one place: by `lmforge train` in its process
(run.run_training) and by the launcher before it starts any (launch.launch).

The method against the hardware (qlora needs CUDA and bitsandbytes), sharding against the hardware (FSDP and
DeepSpeed need CUDA), the trackers' packages, the model folders the run reads, and the run folder: a new run
never overwrites a finished one, --resume has a checkpoint to continue and changes nothing it cannot honour.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DependencyError, NotFoundError, UserInputError, join_problems
from lmforge.fileio import writable_folder
from lmforge.train import checkpoints
from lmforge.train.config import MethodSection, TrainConfig
from lmforge.train.loading import BPE_PREFIX, resolve_model_folder, trusted


def check_environment(config: TrainConfig) -> None:
    """What this process and machine must offer the run: the method's hardware, the launched sharding's
    hardware, the trackers' packages."""
    check_method_hardware(config.method)  # qlora on a CPU stops here, before anything loads
    check_offload_hardware(config)
    check_launched_sharding()  # an FSDP/DeepSpeed launch on a CPU would otherwise quietly run plain DDP
    check_trackers(config.train.report_to)


# What a resumed run may not change: the checkpoint's weights and data position only mean something
# for the same model, data and method (more steps, a new eval cadence or patience are fine).
FIXED_ON_RESUME = ("stage", "init_from", "model", "data", "method", "dpo", "rlhf", "distill", "mlm")
# ... nor what the restored optimizer, scheduler and data position decide: transformers restores the learning
# rate, schedule and weight decay from the checkpoint whatever the config says, and the batch size, accumulation
# and seed fix which examples the resumed steps skip and see. auto_fit chooses the batch for its target GPU.
RESTORED_ON_RESUME = (
    "train.learning_rate",
    "train.lr_scheduler",
    "train.warmup_steps",
    "train.weight_decay",
    "train.micro_batch_size",
    "train.grad_accum",
    "train.seed",
    "train.auto_fit",
    "train.target_gpu",
    "train.global_batch_size",
)
_AUTO_FIT_CHOICES = ("train.micro_batch_size", "train.grad_accum", "train.gradient_checkpointing")


def _changed_keys(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            k
            for key in sorted(set(old) | set(new))
            for k in _changed_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        ]
    return [] if old == new else [prefix]


def saved_value(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def check_same_run(config: TrainConfig, run_dir: Path) -> None:
    """--resume continues the saved run: a change it could not honour is refused, every key named."""
    import yaml

    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    current = config.model_dump(mode="json")
    changed = [
        k for section in FIXED_ON_RESUME for k in _changed_keys(saved.get(section), current.get(section), section)
    ]
    auto_fitted = saved_value(saved, "train.auto_fit") and current["train"]["auto_fit"]  # the planner chose these again
    changed += [
        key
        for key in RESTORED_ON_RESUME
        if saved_value(saved, key) != saved_value(current, key) and not (auto_fitted and key in _AUTO_FIT_CHOICES)
    ]
    if changed:
        shown = ", ".join(
            f"{key} ({saved_value(saved, key)!r} -> {saved_value(current, key)!r})" if key.startswith("train.") else key
            for key in changed
        )
        raise UserInputError(
            f"--resume: {shown} differ from {saved_file}: the checkpoint's weights, data position, optimizer and "
            f"schedule were made under the saved values; resume with them, or start a new run from this one's "
            f"weights with init_from: {run_dir}"
        )


def check_steps_left(config: TrainConfig, checkpoint: Path) -> None:
    """A checkpoint already past max_steps cannot be resumed to it (transformers would train one step more)."""
    step = int(checkpoint.name.split("-")[1])
    if config.train.max_steps is not None and config.train.max_steps < step:
        raise UserInputError(
            f"--resume: train.max_steps {config.train.max_steps} is below the step of {checkpoint} ({step}); a run "
            f"cannot be resumed backwards: raise train.max_steps, or start a new run from that checkpoint's weights "
            f"with init_from: {checkpoint}"
        )


def check_sources(config: TrainConfig) -> None:
    """Every model folder the run will read exists, checked before the run folder is touched."""
    folders = {
        "init_from": config.init_from,
        "model.path": config.model.path,
        "rlhf.reward_model": config.rlhf.reward_model if config.stage == "rlhf" else None,
        "distill.teacher": config.distill.teacher if config.stage == "distill" else None,
    }
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
    check_sources(config)
    run_dir = Path(config.out)
    checkpoint_root = run_dir / "checkpoints"
    if resume:
        last = checkpoints.last_checkpoint(checkpoint_root)
        if last is None:
            raise UserInputError(
                f"--resume: {checkpoint_root} holds no complete checkpoint (set train.save_every); "
                "run without --resume to start over"
            )
        check_same_run(config, run_dir)
        check_steps_left(config, last)
        return writable_folder(run_dir, setting="out"), last
    if checkpoints.list_checkpoints(checkpoint_root) or (run_dir / "final").exists():
        raise UserInputError(
            f"out: {run_dir} already holds a run; pass --resume to continue it, choose a new out folder, "
            f"or set init_from: {run_dir} to start a new run from its weights"
        )
    return writable_folder(run_dir, setting="out"), None


def check_sharding_hardware(*, fsdp: bool, deepspeed: bool) -> None:
    """FSDP and DeepSpeed shard over CUDA GPUs. On a CPU, transformers' Trainer quietly runs plain DDP
    instead (measured: an FSDP accelerate config on this CPU gives DistributedType.MULTI_CPU and whole,
    unsharded parameters), so the user would believe a layout is tested that never ran."""
    import torch

    if (fsdp or deepspeed) and not torch.cuda.is_available():
        engine = "--fsdp" if fsdp else "--deepspeed"
        raise UserInputError(
            f"{engine} needs CUDA GPUs: on a CPU the Trainer would quietly run plain DDP instead; "
            "use --nproc N alone for multi-process training on CPUs"
        )


def check_launched_sharding() -> None:
    """The same check inside a process started by `accelerate launch` with an FSDP or DeepSpeed config."""
    check_sharding_hardware(
        fsdp=os.environ.get("ACCELERATE_USE_FSDP") == "true",
        deepspeed=os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true",
    )


def check_offload_hardware(config: TrainConfig) -> None:
    """Activation offloading moves activations from GPU memory to CPU RAM: on a CPU there is nothing to move
    (and TRL's OffloadActivations needs an accelerator's streams)."""
    if not config.train.offload_activations:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "train.offload_activations moves saved activations from GPU memory to CPU RAM: it needs a CUDA GPU; "
            "on this CPU set it to false"
        )


def check_method_hardware(method: MethodSection) -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes; say so before anything is loaded."""
    if method.name != "qlora":
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise DependencyError(
            "method qlora needs a CUDA GPU (bitsandbytes 4/8-bit kernels); on this CPU use method.name=lora"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise DependencyError("method qlora needs bitsandbytes: pip install 'lmforge[gpu]'")


def check_trackers(report_to: Sequence[str]) -> None:
    """A tracker's package must be installed: transformers would only fail once the model is loaded."""
    import importlib.util

    missing = [name for name in report_to if importlib.util.find_spec(name) is None]
    if missing:
        raise DependencyError(
            f"train.report_to: {', '.join(missing)} is not installed: pip install "
            f"{' '.join(missing)}" + (" (WANDB_MODE=offline keeps a run on this machine)" if "wandb" in missing else "")
        )
