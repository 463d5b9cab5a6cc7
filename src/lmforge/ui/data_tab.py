"""The Data tab: `lmforge data check / stats / preview` on a file, an upload or a built-in set.

Loading skips bad records instead of stopping at the first (`on_error="skip"`), so the page shows every
problem as file:line beside the statistics of what is left; the preview is `preview_records`, the same
rendering and label mask training uses, with the masked (untrained) part dimmed.
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lmforge.errors import LmforgeError, UserInputError

if TYPE_CHECKING:
    import pandas as pd

    from lmforge.ui.workspace import Workspace

KINDS = ["auto", "text", "alpaca", "sharegpt", "messages", "preference", "unpaired_preference", "classification"]
TEMPLATES = ["tokenizer's own", "chatml", "llama-3", "qwen", "alpaca"]


class DataView(NamedTuple):
    summary: str  # markdown: source, layout, kind, counts, truncation
    problems: str  # markdown: every rejected record as file:line (the first 20)
    stats: pd.DataFrame  # character (and token) length percentiles
    histogram: str | None  # PNG of token lengths with the max_len cut
    preview: str  # HTML: records as the model sees them, masked part dimmed


def resolve_source(workspace: Workspace, source: str, upload: str | None) -> str:
    """An uploaded file, a built-in set, or a file/folder inside the allowed folders."""
    if upload:
        return upload
    text = (source or "").strip()
    if not text:
        raise UserInputError("choose a data file or a built-in set, or upload a file")
    return text if text.startswith("builtin:") else str(workspace.check(text))


def data_view(
    workspace: Workspace,
    source: str,
    upload: str | None,
    kind: str,
    columns: str,
    tokenizer: str,
    max_len: float | None,
    template: str,
    n: float,
) -> DataView:
    """Load and validate the data, describe it, and preview `n` records through `tokenizer`."""
    import pandas as pd

    from lmforge.data.load import load_data
    from lmforge.data.stats import compute_stats, load_tokenizer, preview_records
    from lmforge.data.validate import problem_summary

    try:
        result = load_data(
            resolve_source(workspace, source, upload),
            kind=None if kind in ("", "auto") else kind,
            columns=columns.strip() or None,
            on_error="skip",
        )
        loaded = load_tokenizer(workspace.check(tokenizer)) if tokenizer else None
        limit = int(max_len) if max_len else None
        chosen = None if template in ("", TEMPLATES[0]) else template
        histogram = str(_scratch(".png")) if loaded is not None else None
        stats = compute_stats(
            result.dataset,
            result.kind,
            tokenizer=loaded,
            max_len=limit,
            template=chosen,
            label_names=result.label_names,
            histogram_path=histogram,
        )
        shown = preview_records(result, loaded, n=int(n), max_len=limit, template=chosen) if loaded is not None else []
    except LmforgeError as error:
        return DataView(f"**Error:** {error}", "", pd.DataFrame(), None, "")
    more = len(result.sources) - 3
    sources = ", ".join(result.sources[:3]) + (f" and {more} more" if more > 0 else "")
    lines = [f"**{sources}**: {result.format} → **{result.kind.value}**", problem_summary(result.report)]
    duplicates = stats.duplicates
    lines.append(f"duplicates: {duplicates.exact_duplicates} exact, {duplicates.near_duplicates} near-exact")
    if stats.turns_mean is not None:
        lines.append(f"messages per conversation: {stats.turns_mean}")
    if stats.label_counts:
        lines.append("labels: " + ", ".join(f"{name} {count}" for name, count in stats.label_counts.items()))
    if stats.tokens is not None:
        if stats.tokens.template:
            lines.append(f"chat template: {stats.tokens.template}")
        if limit is not None:
            share = stats.tokens.over_max_len / stats.records if stats.records else 0.0
            lines.append(
                f"**over max_len {limit}: {stats.tokens.over_max_len} records ({share:.1%}) would be truncated**"
            )
    else:
        lines.append("pick a tokenizer to see token lengths, truncation and exactly what the model trains on")
    problems = "\n".join(f"- `{problem}`" for problem in result.report.problems)
    if result.report.rejected > len(result.report.problems):
        problems += f"\n- … {result.report.rejected - len(result.report.problems)} more"
    rows = [("characters", stats.chars)] + ([("tokens", stats.tokens.tokens)] if stats.tokens else [])
    frame = pd.DataFrame(
        [
            {
                "": name,
                "mean": lengths.mean,
                "p50": lengths.p50,
                "p90": lengths.p90,
                "p99": lengths.p99,
                "max": lengths.max,
                "total": lengths.total,
            }
            for name, lengths in rows
        ]
    )
    return DataView("  \n".join(lines), problems, frame, histogram, preview_html(shown))


def preview_html(records: list[Any]) -> str:
    """PreviewRecords as HTML: trained text as is, masked text (label -100) dimmed."""
    if not records:
        return ""
    parts = ["<p><span class='lmf-masked'>dimmed = masked (label -100, not trained)</span>, normal = trained on</p>"]
    for record in records:
        head = f"{record.location} · {record.tokens} tokens" + (" · truncated" if record.truncated else "")
        parts.append(f"<h4>{html.escape(head)}</h4>")
        for title, segments in record.parts:
            if title:
                parts.append(f"<b>{html.escape(title)}</b>")
            spans = "".join(
                html.escape(text) if trained else f"<span class='lmf-masked'>{html.escape(text)}</span>"
                for text, trained in segments
            )
            parts.append(f"<div class='lmf-record'>{spans}</div>")
        if record.note:
            parts.append(f"<p><b>{html.escape(record.note)}</b></p>")
    return "\n".join(parts)


def _scratch(suffix: str) -> Path:
    """A new file for a figure the page shows (in the temp folder, which gradio may serve)."""
    folder = Path(tempfile.gettempdir()) / "lmforge-ui"
    folder.mkdir(exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=suffix, dir=folder)
    os.close(handle)
    return Path(name)


def build(app: Any, workspace: Workspace) -> None:
    """The tab's components and events (inside the app's gr.Blocks)."""
    import gradio as gr

    from lmforge.data.builtin import BUILTIN_DATASETS

    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Dropdown(
                list(BUILTIN_DATASETS),
                value="builtin:arith-sft",
                label="data",
                info="a built-in set or a file/folder inside the allowed folders",
                allow_custom_value=True,
                elem_id="data-source",
            )
            upload = gr.File(
                label="or upload a file (.jsonl .json .csv .tsv .parquet .txt)",
                type="filepath",
                file_types=[".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt"],
            )
            kind = gr.Dropdown(KINDS, value="auto", label="layout (auto-detected)")
            columns = gr.Textbox(label="column mapping", placeholder="instruction=question,output=answer")
            tokenizer = gr.Dropdown(
                [], label="tokenizer (a model or run folder)", allow_custom_value=True, elem_id="data-tokenizer"
            )
            with gr.Row():
                max_len = gr.Number(512, label="max_len (tokens)", precision=0, minimum=1, elem_id="data-max-len")
                n = gr.Number(3, label="records to preview", precision=0, minimum=1)
            template = gr.Dropdown(TEMPLATES, value=TEMPLATES[0], label="chat template")
            load = gr.Button("Load and check", variant="primary", elem_id="data-load")
        with gr.Column(scale=2):
            summary = gr.Markdown(elem_id="data-summary")
            problems = gr.Markdown(elem_id="data-problems")
            stats = gr.Dataframe(label="lengths")
            histogram = gr.Image(label="token lengths", type="filepath", height=280)
    preview = gr.HTML(elem_id="data-preview")

    def refresh() -> tuple[Any, Any]:
        return (
            gr.update(choices=[str(p) for p in workspace.data_files()] + list(BUILTIN_DATASETS)),
            gr.update(choices=[str(p) for p in workspace.tokenizer_folders()]),
        )

    app.load(refresh, None, [source, tokenizer])
    load.click(
        lambda *values: data_view(workspace, *values),
        [source, upload, kind, columns, tokenizer, max_len, template, n],
        [summary, problems, stats, histogram, preview],
    )
