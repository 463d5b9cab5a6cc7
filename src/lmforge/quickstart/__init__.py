"""The quickstart: the whole life cycle of a tiny model on a CPU, nothing downloaded (docs/quickstart.md).

    from lmforge.quickstart import run_quickstart
    result = run_quickstart("runs/quickstart", fast=True)
    result.stages["sft"].exact_match, result.report_path

Names load on first use (lmforge.lazy), so `import lmforge.quickstart` imports no training code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

if TYPE_CHECKING:
    from lmforge.quickstart.pipeline import QuickstartResult, StageRecord, run_quickstart

__all__ = ["QuickstartResult", "StageRecord", "run_quickstart"]
__getattr__, __dir__ = lazy_exports(__name__)
