"""The quickstart: the whole life cycle of a tiny model on a CPU, nothing downloaded (docs/quickstart.md).

    from lmforge.quickstart import run_quickstart
    result = run_quickstart("runs/quickstart", fast=True)
    result.stages["sft"].exact_match, result.report_path
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"run_quickstart": "pipeline", "QuickstartResult": "pipeline", "StageRecord": "pipeline"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lmforge.quickstart' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"lmforge.quickstart.{_EXPORTS[name]}"), name)
