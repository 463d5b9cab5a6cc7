"""`lmforge compress`: make a model smaller and faster, and measure what it cost.

quantize   GGUF (f16, q8_0, q4_0, Q4_K_M, Q5_K_M, Q6_K) for llama.cpp; bitsandbytes int8 / nf4
prune      magnitude or Wanda; unstructured, 2:4, or whole MLP channels or attention heads (a smaller model)
factorize  truncated SVD of linear layers, rank per layer from the kept energy
report     the quality report: size, params, load memory, perplexity, exact match, decode speed,
           each beside the original measured in the same run (report.md, report.json, report.png)
sweep      one method at several settings, one report: the size/quality curve

distill    the training stage `distill` (lmforge train), then the report: teacher beside student

An encoder (MiniLM, a BERT: compress.encoder) takes bitsandbytes, prune and factorize, and its report gives
embedding agreement with the original and encode speed instead of perplexity, exact match and decode speed.
"""

from lmforge.compress.distill import distill
from lmforge.compress.factorize import FactorizeResult, factorize
from lmforge.compress.prune import PruneResult, prune
from lmforge.compress.quantize import METHODS as QUANTIZE_METHODS
from lmforge.compress.quantize import QuantizeResult, quantize
from lmforge.compress.report import ModelQuality, QualityReport, compare, measure, write_quality_report
from lmforge.compress.sweep import sweep

__all__ = [
    "QUANTIZE_METHODS",
    "FactorizeResult",
    "ModelQuality",
    "PruneResult",
    "QualityReport",
    "QuantizeResult",
    "compare",
    "distill",
    "factorize",
    "measure",
    "prune",
    "quantize",
    "sweep",
    "write_quality_report",
]
