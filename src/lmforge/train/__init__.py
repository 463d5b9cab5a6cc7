"""The train capability: every stage and method from one validated config (see docs/train.md).

    from lmforge.train import load_config, run_training
    result = run_training(load_config("examples/sft-lora.yaml", ["train.max_steps=50"]))

Names are resolved lazily so importing the package (or `lmforge --help`) loads no torch/transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

if TYPE_CHECKING:
    from lmforge.train.config import TrainConfig, load_config, print_config, validate_config
    from lmforge.train.run import RunResult, run_training

__all__ = ["RunResult", "TrainConfig", "load_config", "print_config", "run_training", "validate_config"]
__getattr__, __dir__ = lazy_exports(__name__)
