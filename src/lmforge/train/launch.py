"""Multi-process training through `accelerate launch`: DDP, DeepSpeed ZeRO-2/3 (+ CPU offload), FSDP.

lmforge writes the accelerate config (and the DeepSpeed JSON) into RUN/launch/, prepares the data
once into RUN/data (prepare.py: no rank tokenizes while the others wait at a collective), then runs
`accelerate launch --config_file RUN/launch/accelerate.yaml -m lmforge train CONFIG ...`; every
process runs the same run_training on the memory-mapped RUN/data, the Trainer splits the batches.
The same files work for a multi-node cluster (docs/train.md shows the commands). DeepSpeed is an optional extra
(`pip install 'lmforge[gpu]'`); generating its config needs nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import DependencyError, UserInputError
from lmforge.fileio import atomic_write_json, atomic_write_text
from lmforge.train import preflight
from lmforge.train.config import TrainConfig, load_config

DeepSpeedMode = Literal["zero2", "zero2-offload", "zero3", "zero3-offload"]
DEEPSPEED_MODES: tuple[str, ...] = ("zero2", "zero2-offload", "zero3", "zero3-offload")
# `--deepspeed plan` picks one of these (or plain DDP) from lmforge.plan's layout for the target GPU.


def deepspeed_config(mode: str) -> dict[str, Any]:
    """A DeepSpeed JSON whose batch/precision/clipping values are "auto": the HF integration fills them
    from TrainingArguments, so they can never disagree with the lmforge config."""
    if mode not in DEEPSPEED_MODES:
        raise UserInputError(f"--deepspeed {mode}: unknown mode (allowed: {', '.join(DEEPSPEED_MODES)})")
    stage = 3 if mode.startswith("zero3") else 2
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if mode.endswith("offload"):
        # ZeRO-Offload (Ren et al. 2021): optimizer states (and with ZeRO-3 the parameters) live in CPU RAM.
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                "stage3_gather_16bit_weights_on_model_save": True,  # RUN/final gets whole safetensors weights
            }
        )
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
    }


def deepspeed_mode_from_plan(layout: dict[str, Any]) -> str | None:
    """The ZeRO mode of the planner's chosen layout (plan.json "layout"); None when plain DDP fits
    (ZeRO-0/1 need no DeepSpeed: DDP keeps a full copy, which the planner found fits)."""
    if not layout.get("fits"):
        raise UserInputError(f"--deepspeed plan: {layout.get('reason', 'no layout fits')}")
    stage = int(layout.get("zero_stage") or 0)
    if stage < 2:
        return None
    mode = "zero3" if stage == 3 else "zero2"
    return mode + ("-offload" if layout.get("offload_optimizer") else "")


def planned_deepspeed_mode(config: TrainConfig, nproc: int) -> str | None:
    """Ask the planner for this run's layout on `nproc` × train.target_gpu."""
    from lmforge.train.loading import load_training_tokenizer
    from lmforge.train.planning import hf_config, plan_run

    if not config.train.target_gpu:
        raise UserInputError("--deepspeed plan needs train.target_gpu (the GPU the planner lays the run out for)")
    tokenizer = load_training_tokenizer(config, Path(config.out)) if config.model.config is not None else None
    plan = plan_run(config, hf_config(config, tokenizer), nproc)
    if "error" in plan:
        raise UserInputError(f"--deepspeed plan: {plan['error']}")
    return deepspeed_mode_from_plan(plan["layout"])


def _mixed_precision(config: TrainConfig) -> str:
    return {"bf16": "bf16", "fp16": "fp16"}.get(config.train.precision, "no")


def accelerate_config(
    config: TrainConfig, nproc: int, *, deepspeed_file: Path | None = None, fsdp: bool = False, num_machines: int = 1
) -> dict[str, Any]:
    """The accelerate config for `nproc` processes in total on `num_machines` machines."""
    if nproc % num_machines:
        raise UserInputError(f"--nproc {nproc} must be a multiple of the {num_machines} machines")
    base: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "num_machines": num_machines,
        "num_processes": nproc,
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": _mixed_precision(config),
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    if deepspeed_file is not None:
        return {
            **base,
            "distributed_type": "DEEPSPEED",
            "deepspeed_config": {"deepspeed_config_file": str(deepspeed_file), "zero3_init_flag": True},
        }
    if fsdp:
        return {
            **base,
            "distributed_type": "FSDP",
            "fsdp_config": {
                "fsdp_version": 2,
                "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # wraps each block (model._no_split_modules)
                "fsdp_reshard_after_forward": True,  # FULL_SHARD: params, grads and optimizer states sharded
                "fsdp_state_dict_type": "FULL_STATE_DICT",  # RUN/final loads with plain from_pretrained
                "fsdp_cpu_ram_efficient_loading": True,
                "fsdp_activation_checkpointing": config.train.gradient_checkpointing,
            },
        }
    return {**base, "distributed_type": "MULTI_GPU"}


def write_launch_files(
    config: TrainConfig, nproc: int, *, deepspeed: str | None = None, fsdp: bool = False, num_machines: int = 1
) -> Path:
    """RUN/launch/accelerate.yaml (+ deepspeed.json); returns the accelerate config path."""
    import yaml

    if deepspeed and fsdp:
        raise UserInputError("choose one of --deepspeed and --fsdp")
    if config.method.name == "qlora" and (fsdp or (deepspeed or "").startswith("zero3")):
        # Sharded 4-bit weights need bitsandbytes' quant_storage and no device_map; lmforge does not set that up.
        raise UserInputError(
            "method qlora cannot be sharded with --fsdp or ZeRO-3 here (each process loads its "
            "4-bit copy onto its own GPU); use --nproc N alone (DDP) or --deepspeed zero2"
        )
    folder = Path(config.out) / "launch"
    deepspeed_file = None
    if deepspeed:
        deepspeed_file = atomic_write_json(folder / "deepspeed.json", deepspeed_config(deepspeed)).resolve()
    settings = accelerate_config(config, nproc, deepspeed_file=deepspeed_file, fsdp=fsdp, num_machines=num_machines)
    return atomic_write_text(folder / "accelerate.yaml", yaml.safe_dump(settings, sort_keys=False))


def launch_command(
    accelerate_file: Path, config_path: str | Path, overrides: list[str], *, resume: bool = False
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_file),
        "-m",
        "lmforge",
        "train",
        str(config_path),
    ]
    for item in overrides:
        command += ["--set", item]
    return command + (["--resume"] if resume else [])


def launch(
    config_path: str | Path,
    overrides: list[str],
    *,
    resume: bool = False,
    nproc: int = 2,
    deepspeed: str | None = None,
    fsdp: bool = False,
    progress: bool = True,
) -> int:
    """Runs the training on `nproc` local processes; returns their exit status.

    The run folder is checked and the data prepared here, in the parent, before any process starts.
    """
    import importlib.util

    from rich.console import Console

    from lmforge.train.prepare import prepare_run

    config = load_config(config_path, overrides)
    preflight.check_sharding_hardware(fsdp=fsdp, deepspeed=bool(deepspeed))
    # What every launched process would check before it loads anything: said once, before any starts.
    preflight.check_method_hardware(config.method)
    preflight.check_offload_hardware(config)
    preflight.check_trackers(config.train.report_to)
    if deepspeed == "plan":
        deepspeed = planned_deepspeed_mode(config, nproc)
    if deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise DependencyError("--deepspeed needs the deepspeed package: pip install 'lmforge[gpu]'")
    preflight.check_run_folder(config, resume)
    accelerate_file = write_launch_files(config, nproc, deepspeed=deepspeed, fsdp=fsdp)
    data = prepare_run(config)
    Console(stderr=True, quiet=not progress).print(
        f"data: {'reused' if data.reused else 'prepared'} {Path(config.out) / 'data'} before launch: "
        f"{data.summary.describe()}"
    )
    return subprocess.call(launch_command(accelerate_file, config_path, overrides, resume=resume))
