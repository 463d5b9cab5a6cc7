"""The Plan tab: `lmforge plan` as a form that answers while you type.

Every figure is `lmforge.plan.plan_training`'s (the planner is pure Python and answers in tens of
milliseconds, so the page re-plans on every change); this module only lays the answer out: the
verdict and why, the per-GPU memory as a stacked bar that reaches the card's capacity, the verdict
for every GPU type, time and cost, and the rules of thumb (lmforge.plan.rules) beside the precise figures.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NamedTuple

from lmforge.errors import LmforgeError, UserInputError
from lmforge.plan.display import count_text, duration_text, money_text
from lmforge.plan.setup import METHODS, PRECISIONS, RECOMPUTE, TrainingSetup

if TYPE_CHECKING:
    import pandas as pd

    from lmforge.ui.workspace import Workspace

GIB = 1024**3
DEFAULT_MODEL = "llama-3.1-8b"
DEFAULT_GPU = "rtx-4090"


class PlanView(NamedTuple):
    """The tab's outputs, in the order of its components."""

    verdict: str  # markdown
    breakdown: pd.DataFrame | None  # columns bar, category, GiB: one stacked bar (None on an error)
    verdicts: pd.DataFrame  # every catalog GPU
    cost: str  # markdown
    rules: pd.DataFrame  # rule of thumb beside the planner's figure
    notes: str  # markdown


def _model_spec(workspace: Workspace, model: str, config_json: str) -> Any:
    """A pasted config.json, else the catalog name / hub id / local folder typed in, as a ModelSpec."""
    from pathlib import Path

    from lmforge.hub.spec import model_spec
    from lmforge.plan.models import spec_from_config

    if config_json and config_json.strip():
        try:
            config = json.loads(config_json)
        except json.JSONDecodeError as error:
            raise UserInputError(f"the pasted config.json is not JSON: {error}") from None
        if not isinstance(config, dict):
            raise UserInputError("the pasted config.json must be one JSON object")
        return spec_from_config(config, name=str(config.get("_name_or_path") or "pasted config.json"))
    name = (model or "").strip()
    if Path(name).expanduser().exists():
        name = str(workspace.check(name))  # a local folder or config.json: only inside the allowed folders
    return model_spec(name)


def plan_view(
    workspace: Workspace,
    model: str,
    config_json: str,
    method: str,
    precision: str,
    batch_size: int,
    seq_len: int,
    grad_accum: int,
    recompute: str,
    lora_rank: int,
    gpu: str,
    gpus: int,
    tokens: float,
) -> PlanView:
    """The plan for the form's values; an input the planner refuses becomes its one-line error, shown in place."""
    import pandas as pd

    from lmforge.plan import plan_training

    try:
        plan = plan_training(
            _model_spec(workspace, model, config_json),
            method=method,
            precision=precision,
            micro_batch_size=int(batch_size),
            seq_len=int(seq_len),
            grad_accum=int(grad_accum),
            recompute=recompute,
            lora_r=int(lora_rank),
            gpu=gpu or None,
            gpus=int(gpus) if gpus else None,
            tokens=int(tokens) if tokens else None,
        )
    except (LmforgeError, ValueError) as error:
        empty = pd.DataFrame()
        return PlanView(f"**Error:** {error}", None, empty, "", empty, "")
    data = plan.to_dict()
    memory = data["memory"]
    breakdown = _breakdown_frame(memory["breakdown"], memory["usable_bytes"], memory["gpu_capacity_bytes"])
    return PlanView(
        _verdict(plan, data),
        breakdown,
        _verdicts_frame(plan, data["verdicts"]),
        _cost(data["throughput"]),
        _rules_frame(data["rules_of_thumb"]),
        "\n".join(f"- {note}" for note in data["notes"]),
    )


def _verdict(plan: Any, data: dict[str, Any]) -> str:
    model, layout, memory = data["model"], data["layout"], data["memory"]
    card = plan.accelerator
    verdict = "<span class='lmf-good'>fits</span>" if layout["fits"] else "<span class='lmf-bad'>does NOT fit</span>"
    shape = f"DP {layout['dp']} × TP {layout['tp']} × PP {layout['pp']}"
    shape += f", ZeRO-{layout['zero_stage']}" if layout["zero_stage"] else ""
    shape += " + offload" if layout["offload_optimizer"] or layout["offload_params"] else ""
    shape += " + sequence parallel" if layout["sequence_parallel"] else ""
    return (
        f"### {verdict}: {layout['gpus']} × {card.display_name} ({card.memory_gib:g} GiB), {shape}\n"
        f"**{model['name']}** ({model['architecture']}): {count_text(model['params_total'])} parameters, "
        f"{count_text(model['params_trainable'])} trainable · **{memory['per_gpu_bytes'] / GIB:,.1f} GiB per GPU** of "
        f"{memory['usable_bytes'] / GIB:,.1f} GiB usable\n\n"
        f"*Why this layout:* {layout['reason']}"
    )


def _breakdown_frame(breakdown: dict[str, int], usable_bytes: int, capacity_bytes: int) -> pd.DataFrame:
    """One bar per GPU, stacked by category, topped with what is left (free, then the headroom kept back).
    Rows run top of the bar first: the chart stacks the last row at the bottom."""
    import pandas as pd

    rows = [(category, value) for category, value in breakdown.items() if value]
    total = sum(value for _, value in rows)
    if usable_bytes > total:
        rows.append(("free", usable_bytes - total))
    if capacity_bytes > max(usable_bytes, total):
        rows.append(("headroom (kept free)", capacity_bytes - max(usable_bytes, total)))
    rows.reverse()
    return pd.DataFrame(
        {
            "bar": ["per GPU"] * len(rows),
            "category": [name for name, _ in rows],
            "GiB": [round(value / GIB, 3) for _, value in rows],
        }
    )


def _verdicts_frame(plan: Any, verdicts: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    cheapest = plan.cheapest.gpu if plan.cheapest is not None else None
    rows = []
    for verdict in verdicts:
        fits = verdict["min_gpus"] is not None
        hours = verdict["hours"]
        rows.append(
            {
                "GPU": verdict["gpu"] + (" (cheapest)" if verdict["gpu"] == cheapest else ""),
                "memory": f"{verdict['memory_gib']:g} GiB",
                "GPUs needed": verdict["min_gpus"] if fits else "does not fit",
                "layout": verdict["layout"],
                "per GPU": f"{verdict['per_gpu_bytes'] / GIB:,.1f} GiB" if fits else "-",
                "time": duration_text(None if hours is None else hours * 3600),
                "cost": money_text(verdict["cost_usd"]),
            }
        )
    return pd.DataFrame(rows)


def _cost(figures: dict[str, Any]) -> str:
    price, rate, gpu_hours = figures["price_usd_per_gpu_hour"], figures["tokens_per_second"], figures["gpu_hours"]
    lines = [
        f"- **{figures['tokens']:,.0f} tokens** at {figures['mfu']:.0%} MFU on {figures['gpus']} GPU(s)",
        f"- wall time **{duration_text(figures['wall_seconds'])}**, "
        + ("-" if gpu_hours is None else f"{gpu_hours:,.1f}")
        + " GPU-hours",
        f"- cost **{money_text(figures['cost_usd'])}**" + ("" if price is None else f" at ${price:g} per GPU-hour"),
    ]
    if rate is not None:
        lines.append(
            f"- {rate:,.0f} tokens/s; one optimizer step of {figures['tokens_per_step']:,} tokens: "
            f"{duration_text(figures['step_seconds'])}"
        )
    return "\n".join(lines)


def _rules_frame(rules: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    def said(value: float | None, unit: str) -> str:
        if value is None:
            return "-"
        return f"{value:g} GPUs" if unit == "gpus" else f"{value / 1e9:,.1f} GB ({value / GIB:,.1f} GiB)"

    return pd.DataFrame(
        [
            {
                "rule of thumb": f"{rule['name']} ({rule['source']})",
                "formula": rule["formula"],
                "rule says": said(rule["value"], rule["unit"]),
                "planner says": said(rule["precise"], rule["unit"]),
                "why they differ": rule["why_they_differ"],
            }
            for rule in rules
        ]
    )


def build(app: Any, workspace: Workspace) -> None:
    """The tab's components and events (inside the app's gr.Blocks)."""
    import gradio as gr

    from lmforge.plan.hardware import list_accelerators
    from lmforge.plan.models import list_catalog

    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(
                [spec.name for spec in list_catalog()],
                value=DEFAULT_MODEL,
                label="model",
                info="a catalog name, a hub id, or a local model folder / config.json path",
                allow_custom_value=True,
                elem_id="plan-model",
            )
            with gr.Accordion("or paste a config.json", open=False):
                config_json = gr.Code(language="json", label="config.json", lines=6, elem_id="plan-config")
            method = gr.Radio(list(METHODS), value="lora", label="method", elem_id="plan-method")
            precision = gr.Dropdown(list(PRECISIONS), value="bf16-mixed", label="precision")
            with gr.Row():
                batch = gr.Number(1, label="micro-batch", precision=0, minimum=1)
                seq_len = gr.Number(2048, label="sequence length", precision=0, minimum=1)
                grad_accum = gr.Number(1, label="grad accumulation", precision=0, minimum=1)
            recompute = gr.Radio(list(RECOMPUTE), value="full", label="activation recomputation")
            lora_rank = gr.Number(TrainingSetup.lora_r, label="LoRA rank", precision=0, minimum=1)
            gpu = gr.Dropdown(
                [card.name for card in list_accelerators()], value=DEFAULT_GPU, label="GPU type", elem_id="plan-gpu"
            )
            with gr.Row():
                gpus = gr.Number(0, label="GPUs (0: the fewest that fit)", precision=0, minimum=0)
                tokens = gr.Number(1e9, label="training tokens")
        with gr.Column(scale=2):
            verdict = gr.Markdown(elem_id="plan-verdict")
            breakdown = gr.BarPlot(
                x="bar", y="GiB", color="category", title="memory per GPU (GiB)", height=320, elem_id="plan-breakdown"
            )
            cost = gr.Markdown(elem_id="plan-cost")
            notes = gr.Markdown()
    verdicts = gr.Dataframe(label="every GPU type: the fewest that fit", elem_id="plan-verdicts", wrap=True)
    rules = gr.Dataframe(label="rules of thumb beside the precise figure", wrap=True)

    # Each widget has a change event; their common base class (gradio Component) declares none.
    inputs: list[Any] = [
        model,
        config_json,
        method,
        precision,
        batch,
        seq_len,
        grad_accum,
        recompute,
        lora_rank,
        gpu,
        gpus,
        tokens,
    ]

    def update(*values: Any) -> PlanView:
        return plan_view(workspace, *values)

    outputs = [verdict, breakdown, verdicts, cost, rules, notes]
    for component in inputs:
        component.change(update, inputs, outputs, trigger_mode="always_last", show_progress="hidden")
    app.load(update, inputs, outputs)
