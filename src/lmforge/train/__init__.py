"""The train capability: every stage and method from one validated config (see docs/train.md).

    from lmforge.train import load_config, run_training
    result = run_training(load_config("examples/sft-lora.yaml", ["train.max_steps=50"]))

Names are resolved lazily so importing the package (or `lmforge --help`) loads no torch/transformers.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "TrainConfig": "lmforge.train.config",
    "load_config": "lmforge.train.config",
    "validate_config": "lmforge.train.config",
    "print_config": "lmforge.train.config",
    "run_training": "lmforge.train.run",
    "RunResult": "lmforge.train.run",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lmforge.train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
