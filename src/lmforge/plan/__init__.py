"""The resource planner: will it fit, on how many GPUs, laid out how, and how long.

    from lmforge.plan import plan_training
    plan = plan_training("llama-3.1-8b", method="lora", gpu="rtx-4090")
    plan.layout.gpus, plan.memory.total_bytes, plan.to_dict()

Pure Python: importing this package must not import torch or transformers. Names are loaded on
first use (PEP 562), so `import lmforge.plan` costs nothing until a function is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

if TYPE_CHECKING:
    from lmforge.plan.hardware import Accelerator, custom_accelerator, get_accelerator, list_accelerators
    from lmforge.plan.layout import LayoutRequest, LayoutSearch
    from lmforge.plan.memory import inference_memory, training_memory
    from lmforge.plan.models import list_catalog, resolve_model, spec_from_config
    from lmforge.plan.params import count_params, count_trainable_params, default_lora_targets
    from lmforge.plan.planner import Plan, Verdict, plan_inference, plan_training
    from lmforge.plan.plot import plot_breakdown
    from lmforge.plan.setup import InferenceSetup, Layout, MemoryBreakdown, TrainingSetup
    from lmforge.plan.simulate import simulate_training
    from lmforge.plan.spec import ModelSpec
    from lmforge.plan.throughput import inference_speed, training_time

__all__ = [
    "Accelerator",
    "InferenceSetup",
    "Layout",
    "LayoutRequest",
    "LayoutSearch",
    "MemoryBreakdown",
    "ModelSpec",
    "Plan",
    "TrainingSetup",
    "Verdict",
    "count_params",
    "count_trainable_params",
    "custom_accelerator",
    "default_lora_targets",
    "get_accelerator",
    "inference_memory",
    "inference_speed",
    "list_accelerators",
    "list_catalog",
    "plan_inference",
    "plan_training",
    "plot_breakdown",
    "resolve_model",
    "simulate_training",
    "spec_from_config",
    "training_memory",
    "training_time",
]
__getattr__, __dir__ = lazy_exports(__name__)
