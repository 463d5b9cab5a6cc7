"""The resource planner: will it fit, on how many GPUs, laid out how, and how long.

    from lmforge.plan import plan_training
    plan = plan_training("llama-3.1-8b", method="lora", gpu="rtx-4090")
    plan.layout.gpus, plan.memory.total_bytes, plan.to_dict()

Pure Python: importing this package must not import torch or transformers. Names are loaded on
first use (PEP 562), so `import lmforge.plan` costs nothing until a function is called.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "plan_training": "planner",
    "plan_inference": "planner",
    "Plan": "planner",
    "Verdict": "planner",
    "resolve_model": "models",
    "list_catalog": "models",
    "spec_from_config": "models",
    "ModelSpec": "spec",
    "count_params": "params",
    "count_trainable_params": "params",
    "default_lora_targets": "params",
    "Accelerator": "hardware",
    "get_accelerator": "hardware",
    "list_accelerators": "hardware",
    "custom_accelerator": "hardware",
    "TrainingSetup": "setup",
    "InferenceSetup": "setup",
    "Layout": "setup",
    "MemoryBreakdown": "setup",
    "training_memory": "memory",
    "inference_memory": "memory",
    "LayoutSearch": "layout",
    "LayoutRequest": "layout",
    "training_time": "throughput",
    "inference_speed": "throughput",
    "simulate_training": "simulate",
    "plot_breakdown": "plot",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lmforge.plan' has no attribute {name!r}")
    return getattr(import_module(f"lmforge.plan.{module}"), name)
