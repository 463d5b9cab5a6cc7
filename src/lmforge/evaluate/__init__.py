"""Evaluation: metrics on a dataset, base-vs-tuned comparison, the stress suite, preference pairs (docs/evaluate.md).

    from lmforge.evaluate import evaluate_model, write_report
    report = evaluate_model("runs/sft", "builtin:arith-sft", compare="base", limit=50)
    write_report(report, "eval-sft")   # report.md, results.jsonl, summary.json

Names load on first use (lmforge.lazy), so `import lmforge.evaluate` imports no metric library and no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

if TYPE_CHECKING:
    from lmforge.evaluate.metrics import (
        ClassificationMetrics,
        PerplexityResult,
        answer_extractor,
        bleu_score,
        classification_metrics,
        exact_matches,
        pairwise_accuracy,
        perplexity,
        rouge_scores,
    )
    from lmforge.evaluate.pairs import MinedPairs, pairs_from_mistakes, preference_accuracy, write_pairs
    from lmforge.evaluate.report import EvalReport, ExampleRow, render_markdown, write_report
    from lmforge.evaluate.run import TASKS, DataReading, evaluate_model, load_records
    from lmforge.evaluate.suites import (
        RUBRIC,
        STRESS_CASES,
        StressCase,
        StressOutput,
        run_stress,
        run_suite,
        suite_cases,
        write_stress,
    )

__all__ = [
    "RUBRIC",
    "STRESS_CASES",
    "TASKS",
    "ClassificationMetrics",
    "DataReading",
    "EvalReport",
    "ExampleRow",
    "MinedPairs",
    "PerplexityResult",
    "StressCase",
    "StressOutput",
    "answer_extractor",
    "bleu_score",
    "classification_metrics",
    "evaluate_model",
    "exact_matches",
    "load_records",
    "pairs_from_mistakes",
    "pairwise_accuracy",
    "perplexity",
    "preference_accuracy",
    "render_markdown",
    "rouge_scores",
    "run_stress",
    "run_suite",
    "suite_cases",
    "write_pairs",
    "write_report",
    "write_stress",
]
__getattr__, __dir__ = lazy_exports(__name__)
