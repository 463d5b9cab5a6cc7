"""The Runs tab: every run folder under the runs folder (from this UI, the CLI or the quickstart), its
state and figures, its plots and model card, and two runs side by side.

Everything shown is read from what `lmforge train` writes: config.yaml, metrics.jsonl, result.json,
plots/loss.png and final/README.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lmforge.errors import LmforgeError
from lmforge.ui import jobs
from lmforge.ui.train_tab import curve_frame

if TYPE_CHECKING:
    import pandas as pd

    from lmforge.ui.workspace import Workspace


def _config(run_dir: Path) -> dict[str, Any]:
    import yaml

    for path in (run_dir / "config.yaml", run_dir / "ui" / "train.yaml"):
        if path.is_file():
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {}


def _name(workspace: Workspace, run_dir: Path) -> str:
    return str(run_dir.relative_to(workspace.runs)) if run_dir.is_relative_to(workspace.runs) else str(run_dir)


def runs_table(workspace: Workspace) -> pd.DataFrame:
    """One row per run folder, most recently changed first."""
    import pandas as pd

    rows = []
    for run_dir in workspace.run_folders():
        config = _config(run_dir)
        state = jobs.run_state(run_dir)
        figures = jobs.progress(run_dir, state)
        rows.append(
            {
                "run": _name(workspace, run_dir),
                "stage": config.get("stage", "?"),
                "method": (config.get("method") or {}).get("name", "?"),
                "state": state.state,
                "step": figures.step,
                "loss": round(figures.train_loss[-1][1], 4) if figures.train_loss else None,
                "validation loss": round(figures.eval_loss[-1][1], 4) if figures.eval_loss else None,
                "fit": (figures.diagnosis or "").split(":")[0],
                "changed": time.strftime("%Y-%m-%d %H:%M", time.localtime((run_dir / "config.yaml").stat().st_mtime))
                if (run_dir / "config.yaml").is_file()
                else "",
            }
        )
    return pd.DataFrame(
        rows, columns=["run", "stage", "method", "state", "step", "loss", "validation loss", "fit", "changed"]
    )


class RunDetails(NamedTuple):
    summary: str  # markdown: state, error, figures
    curves: pd.DataFrame | None  # the loss curves logged so far (a stopped run has no plots/loss.png yet)
    plot: str | None  # plots/loss.png
    card: str  # final/README.md (the model card)
    config: str  # config.yaml


def run_details(workspace: Workspace, run: str) -> RunDetails:
    import json

    if not run:
        return RunDetails("choose a run", None, None, "", "")
    try:
        run_dir = workspace.check(run)
    except LmforgeError as error:
        return RunDetails(f"**Error:** {error}", None, None, "", "")
    state = jobs.run_state(run_dir)
    lines = [f"### {_name(workspace, run_dir)}: {state.detail}"]
    if state.error:
        lines.append(f"**{state.error}**")
    result = run_dir / "result.json"
    if result.is_file():
        data = json.loads(result.read_text())
        lines.append(
            f"{data['stage']} / {data['method']}: {data['steps']} steps, {data['trainable_params']:,} of "
            f"{data['total_params']:,} parameters trained"
        )
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.6g} |" for key, value in data["final_metrics"].items()]
        if data.get("diagnosis"):
            lines += ["", f"fit: **{data['diagnosis']['verdict']}**: {data['diagnosis']['reason']}"]
    plot = run_dir / "plots" / "loss.png"
    card = run_dir / "final" / "README.md"
    config = run_dir / "config.yaml"
    card_text = card.read_text(encoding="utf-8") if card.is_file() else "*no model card yet (the run has not finished)*"
    return RunDetails(
        "\n".join(lines),
        curve_frame(jobs.progress(run_dir)),
        str(plot) if plot.is_file() else None,
        card_text,
        config.read_text(encoding="utf-8") if config.is_file() else "",
    )


class Comparison(NamedTuple):
    table: pd.DataFrame  # settings and figures, one column per run
    curves: pd.DataFrame | None  # step, loss, series ("<run> train" / "<run> validation"); None without points


def compare_runs(workspace: Workspace, first: str, second: str) -> Comparison:
    """Two runs side by side: what differs in their configs, their final figures, and their loss curves."""
    import pandas as pd

    columns: dict[str, dict[str, Any]] = {}
    frames = []
    for run in (first, second):
        if not run:
            continue
        run_dir = workspace.check(run)
        name = _name(workspace, run_dir)
        config = _config(run_dir)
        figures = jobs.progress(run_dir)
        column = {
            f"{section}.{key}": value
            for section in ("model", "data", "method", "train")
            for key, value in (config.get(section) or {}).items()
            if not isinstance(value, dict)
        }
        column["stage"] = config.get("stage")
        column["steps logged"] = figures.step
        column["last loss"] = figures.train_loss[-1][1] if figures.train_loss else None
        column["last validation loss"] = figures.eval_loss[-1][1] if figures.eval_loss else None
        column["fit"] = figures.diagnosis
        columns[name] = column
        frame = curve_frame(figures, prefix=f"{name} ")
        if frame is not None:
            frames.append(frame)
    keys = sorted({key for column in columns.values() for key in column})
    rows = []
    for key in keys:
        values = [columns[name].get(key) for name in columns]
        if len(columns) < 2 or values[0] != values[1] or not key.startswith(("model.", "data.", "method.", "train.")):
            cells = {name: "" if value is None else str(value) for name, value in zip(columns, values, strict=True)}
            rows.append({"": key, **cells})
    return Comparison(pd.DataFrame(rows), pd.concat(frames, ignore_index=True) if frames else None)


def build(app: Any, workspace: Workspace) -> None:
    """The tab's components and events (inside the app's gr.Blocks)."""
    import gradio as gr

    refresh = gr.Button("↻ refresh", elem_id="runs-refresh")
    table = gr.Dataframe(label="runs (under the runs folder)", elem_id="runs-table", wrap=True)
    with gr.Row():
        with gr.Column():
            run = gr.Dropdown([], label="run", allow_custom_value=True, elem_id="runs-run")
            summary = gr.Markdown(elem_id="runs-summary")
            run_curves = gr.LinePlot(
                x="step", y="loss", color="series", title="loss", height=280, elem_id="runs-curves"
            )
            with gr.Accordion("plots/loss.png (written when the run finishes)", open=False):
                plot = gr.Image(show_label=False, type="filepath", height=300)
        with gr.Column():
            with gr.Accordion("model card (final/README.md)", open=True):
                card = gr.Markdown()
            with gr.Accordion("config.yaml", open=False):
                config = gr.Code(language="yaml")
    gr.Markdown("### compare two runs")
    with gr.Row():
        first = gr.Dropdown([], label="run A", allow_custom_value=True)
        second = gr.Dropdown([], label="run B", allow_custom_value=True)
    comparison = gr.Dataframe(label="settings that differ, and the figures", wrap=True)
    curves = gr.LinePlot(x="step", y="loss", color="series", title="loss", height=300)

    def reload() -> tuple[Any, ...]:
        choices = [str(path) for path in workspace.run_folders()]
        return runs_table(workspace), *(gr.update(choices=choices) for _ in range(3))

    app.load(reload, None, [table, run, first, second])
    refresh.click(reload, None, [table, run, first, second])
    run.change(lambda value: run_details(workspace, value), run, [summary, run_curves, plot, card, config])

    def compare(a: str, b: str) -> Comparison:
        try:
            return compare_runs(workspace, a, b)
        except LmforgeError as error:
            raise gr.Error(str(error)) from None

    first.change(compare, [first, second], [comparison, curves])
    second.change(compare, [first, second], [comparison, curves])
