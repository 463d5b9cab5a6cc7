import json

from lmforge.evaluate.report import EvalReport, ExampleRow, decide_outcomes, render_markdown, write_report


def _report(higher=True):
    rows = [
        ExampleRow(0, "q0", "r0", "p0", 0.9, compare_prediction="b0", compare_score=0.1),
        ExampleRow(1, "q1|pipe", "r1", "p1\nline", 0.2, compare_prediction="b1", compare_score=0.5),
        ExampleRow(2, "q2", "r2", "p2", 0.3, compare_prediction="b2", compare_score=0.3),
    ]
    return EvalReport(
        "tuned",
        "generation",
        "data.jsonl",
        "rougeL",
        higher,
        {"rougeL": 0.47, "examples": 3},
        rows,
        compare_model="base",
        compare_summary={"rougeL": 0.3, "examples": 3},
    )


def test_wins_losses_and_ties_follow_the_score_direction():
    report = _report()
    decide_outcomes(report)
    assert [r.outcome for r in report.rows] == ["win", "loss", "tie"]
    assert report.outcomes == {"win": 1, "loss": 1, "tie": 1}
    lower = _report(higher=False)  # e.g. NLL: lower is better
    decide_outcomes(lower)
    assert [r.outcome for r in lower.rows] == ["loss", "win", "tie"]


def test_report_files_hold_side_by_side_rows_and_summary(tmp_path):
    report = _report()
    decide_outcomes(report)
    paths = write_report(report, tmp_path / "out")
    markdown = paths["report"].read_text()
    assert "| rougeL | 0.47 | 0.3 |" in markdown
    assert "1 wins, 1 losses, 1 ties" in markdown
    assert "q1\\|pipe" in markdown and "p1 line" in markdown  # table cells stay one line
    rows = [json.loads(line) for line in paths["results"].read_text().splitlines()]
    assert [r["outcome"] for r in rows] == ["win", "loss", "tie"]
    assert json.loads(paths["summary"].read_text())["outcomes"]["win"] == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.md", "results.jsonl", "summary.json"]


def test_confusion_matrix_is_rendered():
    report = EvalReport(
        "m",
        "classification",
        "d",
        "correct",
        True,
        {"accuracy": 0.5},
        [],
        extra={"confusion_matrix": [[1, 0], [1, 0]], "labels": ["neg", "pos"]},
    )
    assert "| neg | 1 | 0 |" in render_markdown(report)


def test_generation_rows_show_exact_match_beside_the_score():
    rows = [ExampleRow(0, "What is 2 plus 2?", "4", "The answer is 4.", 0.4, details={"exact_match": True})]
    markdown = render_markdown(EvalReport("m", "generation", "d", "rougeL", True, {"rougeL": 0.4}, rows))
    assert "| exact match |" in markdown and "| 0.4 | yes |" in markdown
