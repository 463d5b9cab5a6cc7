"""The evaluation report: a summary table and per-example side-by-side rows a person can read.

Written as report.md (for people), results.jsonl (one row per example) and summary.json (for
scripts), each atomically: an interrupted eval never leaves half a report.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.fileio import atomic_write_json, atomic_write_text

_CELL_CHARS = 160


@dataclass
class ExampleRow:
    """One example: what was asked, what was expected, what each model said and how it scored."""

    index: int
    instruction: str
    reference: str
    prediction: str
    score: float | None  # the row's headline score (ROUGE-L, 1/0 correct, NLL per token, ...)
    details: dict[str, Any] = field(default_factory=dict)
    compare_prediction: str | None = None
    compare_score: float | None = None
    outcome: str | None = None  # with --compare: "win" (tuned better), "loss", "tie"


@dataclass
class EvalReport:
    model: str
    task: str
    data: str
    score_name: str  # what ExampleRow.score is
    higher_is_better: bool
    summary: dict[str, Any]
    rows: list[ExampleRow]
    compare_model: str | None = None
    compare_summary: dict[str, Any] | None = None
    outcomes: dict[str, int] | None = None  # wins / losses / ties of `model` against `compare_model`
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. confusion matrix
    notes: list[str] = field(default_factory=list)  # how to read the figures (e.g. BLEU on short references)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_outcomes(report: EvalReport) -> None:
    """Per-example win/loss/tie of `model` (the tuned one) against `compare_model` (the base)."""
    counts = {"win": 0, "loss": 0, "tie": 0}
    for row in report.rows:
        if row.score is None or row.compare_score is None:
            continue
        if row.score == row.compare_score:
            row.outcome = "tie"
        else:
            better = row.score > row.compare_score if report.higher_is_better else row.score < row.compare_score
            row.outcome = "win" if better else "loss"
        counts[row.outcome] += 1
    report.outcomes = counts


def _cell(text: Any) -> str:
    value = "" if text is None else (f"{text:.4g}" if isinstance(text, float) else str(text))
    value = " ".join(value.split())
    if len(value) > _CELL_CHARS:
        value = value[: _CELL_CHARS - 1] + "…"
    return value.replace("|", "\\|")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_markdown(report: EvalReport) -> str:
    lines = [
        f"# Evaluation: {report.model}",
        "",
        f"- Task: {report.task}",
        f"- Data: {report.data}",
        f"- Examples: {len(report.rows)}",
        "",
    ]
    metrics = [key for key, value in report.summary.items() if isinstance(value, int | float)]
    if report.compare_model and report.compare_summary is not None:
        lines += ["## Summary", "", f"| metric | {report.model} | {report.compare_model} |", "|---|---|---|"]
        lines += [
            f"| {key} | {_number(report.summary[key])} | {_number(report.compare_summary.get(key, ''))} |"
            for key in metrics
        ]
        if report.outcomes:
            o = report.outcomes
            lines += [
                "",
                f"Per example ({report.score_name}): **{o['win']} wins, {o['loss']} losses, "
                f"{o['tie']} ties** for {report.model} against {report.compare_model}.",
            ]
    else:
        lines += ["## Summary", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_number(report.summary[key])} |" for key in metrics]
    lines += [f"\n**Note:** {note}" for note in report.notes]
    matrix = report.extra.get("confusion_matrix")
    if matrix:
        labels = report.extra["labels"]
        lines += [
            "",
            "## Confusion matrix (rows: true, columns: predicted)",
            "",
            "| | " + " | ".join(labels) + " |",
            "|---" * (len(labels) + 1) + "|",
        ]
        lines += [f"| {labels[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(matrix)]
    lines += ["", "## Examples", ""]
    if report.compare_model:
        lines += [
            f"| # | instruction | reference | {report.model} | {report.score_name} | {report.compare_model} "
            f"| {report.score_name} | outcome |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.index} | {_cell(r.instruction)} | {_cell(r.reference)} | {_cell(r.prediction)} | "
            f"{_cell(r.score)} | {_cell(r.compare_prediction)} | {_cell(r.compare_score)} | {r.outcome or ''} |"
            for r in report.rows
        ]
    elif any("exact_match" in r.details for r in report.rows):
        lines += [
            f"| # | instruction | reference | prediction | {report.score_name} | exact match |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.index} | {_cell(r.instruction)} | {_cell(r.reference)} | {_cell(r.prediction)} | "
            f"{_cell(r.score)} | {'yes' if r.details.get('exact_match') else 'no'} |"
            for r in report.rows
        ]
    else:
        lines += [f"| # | instruction | reference | prediction | {report.score_name} |", "|---|---|---|---|---|"]
        lines += [
            f"| {r.index} | {_cell(r.instruction)} | {_cell(r.reference)} | {_cell(r.prediction)} | {_cell(r.score)} |"
            for r in report.rows
        ]
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """report.md, results.jsonl and summary.json under `out_dir`; returns their paths."""
    out = Path(out_dir)
    rows = "".join(json.dumps(asdict(row), ensure_ascii=False, default=str) + "\n" for row in report.rows)
    summary = {key: value for key, value in report.to_dict().items() if key != "rows"}
    return {
        "report": atomic_write_text(out / "report.md", render_markdown(report)),
        "results": atomic_write_text(out / "results.jsonl", rows),
        "summary": atomic_write_json(out / "summary.json", summary),
    }
