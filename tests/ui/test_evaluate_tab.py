"""The Evaluate tab's callback: a metric suite with a second model beside, and the stress suite."""

from __future__ import annotations

from lmforge.ui import evaluate_tab


def test_a_metric_suite_with_the_comparison_model_beside_it(workspace, ui_root):
    model = str(ui_root / "models" / "tiny")
    view = evaluate_tab.evaluate_view(workspace, model, model, "metrics", "builtin:arith-sft", "auto", 3, 4, "answer")
    assert view.summary.startswith("**generation** on `builtin:arith-sft`: 3 examples")
    assert "| rougeL |" in view.summary and "per example (rougeL): **0 wins, 0 losses, 3 ties**" in view.summary
    assert len(view.rows) == 3 and {"instruction", "reference", "tiny", "outcome"} <= set(view.rows.columns)
    assert view.report == str(workspace.runs / "eval" / "tiny-builtin_arith-sft" / "report.md")


def test_the_stress_suite_collects_responses_for_review(workspace, ui_root):
    model = str(ui_root / "models" / "tiny")
    view = evaluate_tab.evaluate_view(workspace, model, evaluate_tab.NO_COMPARE, "stress", "", "auto", 1, 2, "answer")
    assert "**stress suite**: 6 responses from tiny" in view.summary
    assert list(view.rows["case"])[:2] == ["simple-fact", "multi-step-reasoning"]
    assert view.report.endswith("stress.md")


def test_errors_are_one_line(workspace, ui_root):
    model = str(ui_root / "models" / "tiny")
    no_base = evaluate_tab.evaluate_view(
        workspace, model, evaluate_tab.BASE, "metrics", "builtin:arith-sft", "auto", 1, 2, "answer"
    )
    assert no_base.summary.startswith("**Error:** cannot tell which base model")
    assert (
        "outside"
        in evaluate_tab.evaluate_view(
            workspace, "/etc", "none", "metrics", "builtin:arith-sft", "auto", 1, 2, "answer"
        ).summary
    )
