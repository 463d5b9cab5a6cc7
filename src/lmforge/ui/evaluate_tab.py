"""The Evaluate tab: `lmforge eval` on a run's model, with its base model (or any other) beside it.

A metric suite is `evaluate_model` + `write_report` (the same report.md, results.jsonl and summary.json
as the CLI, under RUNS/eval/); the stress suite is `run_stress` + `write_stress` (responses and a rubric
sheet for human review). Decoding is greedy, as `lmforge eval` does by default, so results reproduce.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lmforge.errors import LmforgeError, UserInputError

if TYPE_CHECKING:
    import pandas as pd

    from lmforge.ui.workspace import Workspace

NO_COMPARE = "none"
BASE = "base (what it was fine-tuned from)"
TASKS = ["auto", "generation", "classification", "reward", "perplexity"]
EXTRACTS = ["answer", "exact", "first-line", "last-number"]


class EvalView(NamedTuple):
    summary: str  # markdown: metrics side by side, wins/losses/ties, where the report is
    rows: pd.DataFrame  # one row per example (or per stress case and model)
    report: str | None  # report.md / stress.md to download


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "data"


def _compare(workspace: Workspace, model: str, compare: str) -> str | None:
    if compare in ("", NO_COMPARE, None):
        return None
    if compare == BASE:
        from lmforge.generate.load import base_of

        return workspace.model(base_of(model))
    return workspace.model(compare)


def evaluate_view(
    workspace: Workspace,
    model: str,
    compare: str,
    suite: str,
    data: str,
    task: str,
    limit: float,
    max_new_tokens: float,
    extract: str,
) -> EvalView:
    """Run the metric suite on `data` (or the stress suite) for `model` and its comparison model."""
    import pandas as pd

    from lmforge.generate.sampling import sampling_params

    try:
        if not model:
            raise UserInputError("choose a model (a run or model folder, or a hub id org/name)")
        model_path = workspace.model(model)
        other = _compare(workspace, model_path, compare)
        params = sampling_params(temperature=0, max_new_tokens=int(max_new_tokens))
        out = workspace.runs / "eval" / f"{_slug(Path(model_path).name)}-{_slug(suite if suite == 'stress' else data)}"
        if suite == "stress":
            return _stress(model_path, other, params, out)
        source = data.strip()
        if not source:
            raise UserInputError("choose evaluation data (a built-in set's test split, or a file)")
        if not source.startswith("builtin:"):
            source = str(workspace.check(source))
        from lmforge.evaluate.report import write_report
        from lmforge.evaluate.run import evaluate_model

        report = evaluate_model(
            model_path,
            source,
            task=None if task == "auto" else task,
            compare=other,
            limit=int(limit) if limit else None,
            extract=extract,
            params=params,
        )
        paths = write_report(report, out)
    except LmforgeError as error:
        return EvalView(f"**Error:** {error}", pd.DataFrame(), None)
    return EvalView(_summary(report, paths["report"]), _rows(report), str(paths["report"]))


def _summary(report: Any, path: Path) -> str:
    names = [report.model] + ([report.compare_model] if report.compare_summary is not None else [])
    lines = [
        f"**{report.task}** on `{report.data}`: {len(report.rows)} examples",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for key, value in report.summary.items():
        if isinstance(value, int | float):
            other = (report.compare_summary or {}).get(key)
            cells = [f"{value:.4g}"] + (
                [f"{other:.4g}" if isinstance(other, int | float) else ""] if report.compare_summary is not None else []
            )
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if report.outcomes:
        o = report.outcomes
        lines += [
            "",
            f"per example ({report.score_name}): **{o['win']} wins, {o['loss']} losses, {o['tie']} ties** "
            f"for {report.model} against {report.compare_model}",
        ]
    lines += ["", f"report: `{path}`"]
    return "\n".join(lines)


def _rows(report: Any) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for row in report.rows:
        entry = {
            "#": row.index,
            "instruction": row.instruction,
            "reference": row.reference,
            report.model: row.prediction,
            report.score_name: row.score,
        }
        if report.compare_model:
            entry[report.compare_model] = row.compare_prediction
            entry[f"{report.score_name} "] = row.compare_score
            entry["outcome"] = row.outcome
        rows.append(entry)
    return pd.DataFrame(rows)


def _stress(model: str, compare: str | None, params: Any, out: Path) -> EvalView:
    import pandas as pd

    from lmforge.evaluate.suites import run_suite, write_stress

    outputs = run_suite(model, compare=compare, params=params)
    paths = write_stress(outputs, out)
    names = ", ".join(dict.fromkeys(output.model for output in outputs))
    summary = (
        f"**stress suite**: {len(outputs)} responses from {names} for human review; rubric sheet: "
        f"`{paths['rubric']}`, responses: `{paths['review']}`"
    )
    frame = pd.DataFrame([asdict(output) for output in outputs])
    return EvalView(summary, frame, str(paths["review"]))


def build(app: Any, workspace: Workspace) -> None:
    """The tab's components and events (inside the app's gr.Blocks)."""
    import gradio as gr

    from lmforge.data.builtin import BUILTIN_DATASETS

    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(
                [],
                label="model (a run or model folder, or a hub id org/name[@revision])",
                allow_custom_value=True,
                elem_id="eval-model",
            )
            compare = gr.Dropdown(
                [NO_COMPARE, BASE], value=BASE, label="beside it", allow_custom_value=True, elem_id="eval-compare"
            )
            suite = gr.Radio(
                ["metrics", "stress"],
                value="metrics",
                label="suite",
                info="metrics on a data set, or the six stress probes for human review",
            )
            data = gr.Dropdown(
                list(BUILTIN_DATASETS),
                value="builtin:arith-sft",
                allow_custom_value=True,
                label="data (built-in: its test split)",
            )
            task = gr.Dropdown(TASKS, value="auto", label="task")
            with gr.Row():
                limit = gr.Number(20, label="examples", precision=0, minimum=1, elem_id="eval-limit")
                max_new_tokens = gr.Number(
                    32, label="max new tokens", precision=0, minimum=1, elem_id="eval-max-new-tokens"
                )
            extract = gr.Dropdown(EXTRACTS, value="answer", label="exact-match extraction")
            run = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
        with gr.Column(scale=2):
            summary = gr.Markdown(elem_id="eval-summary")
            download = gr.File(label="report")
    rows = gr.Dataframe(label="per example", wrap=True, elem_id="eval-rows")

    def refresh() -> tuple[Any, Any, Any]:
        models = [str(path) for path in workspace.model_folders()]
        data_files = list(BUILTIN_DATASETS) + [str(path) for path in workspace.data_files()]
        return gr.update(choices=models), gr.update(choices=[NO_COMPARE, BASE, *models]), gr.update(choices=data_files)

    app.load(refresh, None, [model, compare, data])
    run.click(
        lambda *values: evaluate_view(workspace, *values),
        [model, compare, suite, data, task, limit, max_new_tokens, extract],
        [summary, rows, download],
    )
