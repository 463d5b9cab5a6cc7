"""The Train tab: a form that writes an `lmforge train` config, launches it in the background, and
watches it live.

The form is generated from the config's own schema (`lmforge.train.config.TrainConfig`): every key's
default, allowed values and help text are the library's, validation is `validate_config` (every bad
key reported at once), and the YAML shown and downloaded is `config_to_yaml`'s. The run itself is
`lmforge train` in its own process (lmforge.ui.jobs), so it survives the browser; the live view reads
the files it writes: metrics.jsonl for the curves, tokens/s and ETA, plan.json for the planned memory,
result.json for the fit diagnosis.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lmforge.errors import LmforgeError, UserInputError
from lmforge.plan.display import duration_text
from lmforge.ui import jobs

if TYPE_CHECKING:
    import pandas as pd

    from lmforge.ui.workspace import Workspace

GIB = 1024**3
# Keys shown on the form itself; every other key of the schema is folded under "advanced", or under the stage's
# own settings (its section is named after the stage), so a key the config gains shows up without a change here.
MAIN = (
    "stage",
    "model.path",
    "data.train",
    "data.eval",
    "method.name",
    "data.max_len",
    "train.max_steps",
    "train.epochs",
    "train.micro_batch_size",
    "train.grad_accum",
    "train.learning_rate",
    "train.eval_every",
    "train.save_every",
    "train.precision",
)
STAGE_SECTIONS = ("dpo", "rlhf", "distill", "mlm")
# Keys the form does not offer: `out` is the run name; the UI never runs code from a model's files (no trusted
# pickle, no repo code), so a config that needs either is for `lmforge train` after reading that code.
NOT_ON_FORM = ("out", "model.trust_pickle", "model.trust_remote_code")
# Keys that name a folder or file: resolved, and refused outside the allowed folders; MODELS may be hub ids too
# (train resolves them through lmforge.hub.locate_model), model.tokenizer is a local folder or bpe:N.
MODELS = ("init_from", "model.path", "rlhf.reward_model", "distill.teacher")
PATHS = (*MODELS, "model.tokenizer", "data.train", "data.eval")
# The form's own defaults where the library's would make the page less useful: a checkpoint every 50 steps so
# that Stop then Resume loses little, and a LoRA fine-tune of a folder as the common case.
FORM_DEFAULTS = {"method.name": "lora", "train.save_every": 50}


@dataclass(frozen=True)
class FormField:
    """One config key as the form shows it: its schema default, allowed values and help text."""

    key: str
    default: Any
    choices: tuple[Any, ...] | None  # a Literal's values
    kind: str  # number | integer | text | check | choice | choices | json | list | path
    help: str
    optional: bool  # empty means None (the key's default is None)


def _annotation(key: str) -> Any:
    from lmforge.train.config import TrainConfig

    model: Any = TrainConfig
    *sections, leaf = key.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
    return model.model_fields[leaf]


def schema_keys() -> list[str]:
    """Every leaf key of TrainConfig, dotted, in the schema's order (sections such as train.early_stopping walked)."""
    from pydantic import BaseModel

    from lmforge.train.config import TrainConfig

    def walk(model: Any, prefix: str) -> list[str]:
        keys = []
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                keys += walk(field.annotation, f"{prefix}{name}.")
            else:
                keys.append(prefix + name)
        return keys

    return walk(TrainConfig, "")


def form_field(key: str) -> FormField:
    """The FormField for a dotted config key, read from TrainConfig's pydantic fields."""
    field = _annotation(key)
    annotation = field.annotation
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    inner = arguments[0] if optional and len(arguments) == 1 else annotation
    default = FORM_DEFAULTS.get(key, field.get_default(call_default_factory=True))
    item = typing.get_args(inner)[0] if typing.get_origin(inner) is list else None
    choices = None
    if typing.get_origin(inner) is typing.Literal:
        kind, choices = "choice", typing.get_args(inner)
    elif typing.get_origin(item) is typing.Literal:
        kind, choices = "choices", typing.get_args(item)
    elif key in PATHS:
        kind = "path"
    elif inner is bool:
        kind = "check"
    elif inner is int:
        kind = "integer"
    elif inner is float:
        kind = "number"
    elif typing.get_origin(inner) is dict:
        kind = "json"
    elif typing.get_origin(inner) is list:
        kind = "list"
    else:
        kind = "text"
    return FormField(key, default, choices, kind, field.description or "", optional)


def all_fields() -> list[FormField]:
    """The form's fields: the main ones first, then the rest of the schema (advanced, then stage settings)."""
    rest = [key for key in schema_keys() if key not in MAIN and key not in NOT_ON_FORM]
    return [form_field(key) for key in (*MAIN, *rest)]


def is_stage_setting(key: str) -> bool:
    return key.split(".")[0] in STAGE_SECTIONS


def _value(workspace: Workspace, field: FormField, value: Any) -> Any:
    """A form value as the config wants it; empty optional values are None (the library's default)."""
    empty = value is None or (isinstance(value, str) and not value.strip()) or (field.optional and value == 0)
    if empty:
        return None if field.optional else field.default
    if field.kind == "integer":
        return int(value)
    if field.kind == "json":
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise UserInputError(f"{field.key}: not JSON ({error})") from None
    if field.kind == "list":
        return [item.strip() for item in str(value).split(",") if item.strip()]
    if field.kind == "path":
        text = str(value).strip()
        keep = text.startswith("builtin:") or (field.key == "model.tokenizer" and text.startswith("bpe:"))
        if field.key in MODELS:
            return workspace.model(text)
        return text if keep else str(workspace.check(text))
    return value


def config_from_form(workspace: Workspace, name: str, values: dict[str, Any]) -> Any:
    """A validated TrainConfig for run `name` (a folder under the runs folder) from the form's values.

    Every problem is reported at once: paths outside the allowed folders and the config's own validation."""
    from lmforge.errors import ConfigError, join_problems
    from lmforge.train.config import validate_config

    raw: dict[str, Any] = {"out": str(workspace.run_path(name))}
    problems = []
    for field in all_fields():
        try:
            value = _value(workspace, field, values.get(field.key, field.default))
        except LmforgeError as error:
            problems.append(f"{field.key}: {error}")
            value = None
        node = raw
        *sections, leaf = field.key.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    try:
        config = validate_config(raw)
    except ConfigError as error:
        problems.append(str(error).removeprefix("invalid config: "))
    if problems:
        raise ConfigError("invalid config: " + join_problems(problems))
    return config


class FormResult(NamedTuple):
    yaml: str  # the config as YAML, or empty on error
    message: str  # markdown: an error, or what happened
    download: str | None  # a YAML file to download


def preview_config(workspace: Workspace, name: str, values: dict[str, Any]) -> FormResult:
    """The YAML the form makes (what `lmforge train` will read), or every problem with it."""
    from lmforge.train.config import config_to_yaml

    try:
        config = config_from_form(workspace, name, values)
    except LmforgeError as error:
        return FormResult("", f"**Error:** {error}", None)
    text = config_to_yaml(config)
    from lmforge.ui.data_tab import _scratch

    path = _scratch(".yaml")
    path.write_text(text, encoding="utf-8")
    return FormResult(text, f"valid config for `{config.out}`", str(path))


def launch_from_form(workspace: Workspace, name: str, values: dict[str, Any]) -> FormResult:
    """Validate, check the run folder (no overwrite of a finished run), and start `lmforge train` in the background."""
    from lmforge.train.config import config_to_yaml
    from lmforge.train.preflight import check_run_folder

    try:
        config = config_from_form(workspace, name, values)
        check_run_folder(config, resume=False)
        text = config_to_yaml(config)
        state = jobs.launch(text, Path(config.out))
    except LmforgeError as error:
        return FormResult("", f"**Error:** {error}", None)
    return FormResult(text, f"launched **{Path(config.out).name}**: {state.detail}", None)


def form_values(workspace: Workspace, config_path: str) -> tuple[str, dict[str, Any]]:
    """(run name, values by key) of a YAML config, to fill the form: `load_config` reads and validates it, so a
    config the form loads is one `lmforge train` accepts. Its `out` becomes the run name under the runs folder."""
    from lmforge.train.config import load_config

    config = load_config(config_path).model_dump(mode="json")
    trusted = [key for key in NOT_ON_FORM[1:] if config["model"][key.split(".")[1]]]
    if trusted:
        raise UserInputError(
            f"{config_path} sets {' and '.join(trusted)}: the UI never runs code from a model's "
            "files; read that code, then run this config with lmforge train"
        )
    values: dict[str, Any] = {}
    for field in all_fields():
        value: Any = config
        for part in field.key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if field.kind == "json" and value is not None:
            value = json.dumps(value)
        elif field.kind == "list" and value is not None:
            value = ",".join(value)
        elif field.kind == "choices":
            value = value or []
        elif value is None and field.kind in ("integer", "number"):
            value = 0  # the form's "off"
        values[field.key] = value
    out = Path(config["out"]).expanduser().resolve()
    name = str(out.relative_to(workspace.runs)) if out.is_relative_to(workspace.runs) else out.name
    return name, values


class LiveView(NamedTuple):
    status: str  # markdown: state, step, tokens/s, ETA, memory, fit diagnosis, error
    curves: pd.DataFrame | None  # step, loss, series (train / validation); None before the first point
    log: str  # the log's last lines


def live_view(workspace: Workspace, run: str) -> LiveView:
    """The selected run as it is now (called every few seconds by the page's timer)."""
    if not run:
        return LiveView("choose a run to watch", None, "")
    try:
        run_dir = workspace.check(run)
    except LmforgeError as error:
        return LiveView(f"**Error:** {error}", None, "")
    state = jobs.run_state(run_dir)
    figures = jobs.progress(run_dir, state)
    return LiveView(status_markdown(run_dir, state, figures), curve_frame(figures), jobs.log_tail(run_dir))


def curve_frame(figures: jobs.Progress, prefix: str = "") -> pd.DataFrame | None:
    """The loss curves as (step, loss, series) rows; None without a point, never an empty frame (gradio's line
    plot fixes its colour scale on the first data it gets, so an empty first frame would leave it blank)."""
    import pandas as pd

    curve = [(step, loss, f"{prefix}train") for step, loss in figures.train_loss]
    curve += [(step, loss, f"{prefix}validation") for step, loss in figures.eval_loss]
    return pd.DataFrame(curve, columns=["step", "loss", "series"]) if curve else None


def status_markdown(run_dir: Path, state: jobs.RunState, figures: jobs.Progress) -> str:
    style = {"running": "lmf-good", "training": "lmf-good", "finished": "lmf-good", "failed": "lmf-bad"}
    lines = [f"### {run_dir.name}: <span class='{style.get(state.state, 'lmf-note')}'>{state.detail}</span>"]
    if state.error:
        lines.append(f"**{state.error}**")
    total = f" of {figures.total_steps}" if figures.total_steps else ""
    done = f" ({figures.fraction:.0%})" if figures.fraction is not None else ""
    lines.append(f"step **{figures.step}**{total}{done} · {figures.checkpoints} checkpoint(s)")
    if figures.train_loss:
        lines.append(
            f"loss {figures.train_loss[-1][1]:.4f}"
            + (f" · validation {figures.eval_loss[-1][1]:.4f}" if figures.eval_loss else "")
        )
    if state.alive and figures.tokens_per_second is not None:
        eta = f" · ETA {duration_text(figures.eta_seconds)}" if figures.eta_seconds is not None else ""
        lines.append(f"{figures.tokens_per_second:,.0f} tokens/s{eta}")
    memory = []
    if figures.planned_bytes:
        memory.append(
            f"planned {figures.planned_bytes / GIB:,.2f} GiB per GPU"
            + (f" ({figures.planned_gpu})" if figures.planned_gpu else "")
        )
    if figures.measured_bytes:
        memory.append(f"measured peak {figures.measured_bytes / GIB:,.2f} GiB (torch.cuda.max_memory_allocated)")
    elif figures.resident_bytes:
        memory.append(
            f"process memory now {figures.resident_bytes / GIB:,.2f} GiB (RSS; GPU peaks are measured on CUDA runs)"
        )
    if memory:
        lines.append("memory: " + " · ".join(memory))
    if figures.diagnosis:
        lines.append(f"fit: {figures.diagnosis}")
    return "  \n".join(lines)


def stop_run(workspace: Workspace, run: str) -> str:
    try:
        return f"**{jobs.stop(workspace.check(run)).detail}**"
    except LmforgeError as error:
        return f"**Error:** {error}"


def resume_run(workspace: Workspace, run: str) -> str:
    """Continue the run from its last complete checkpoint (`lmforge train RUN/config.yaml --resume`)."""
    from lmforge.train.config import load_config
    from lmforge.train.preflight import check_run_folder

    try:
        run_dir = workspace.check(run)
        config = load_config(run_dir / "config.yaml")
        if Path(config.out).resolve() != run_dir:
            raise UserInputError(f"{run_dir}/config.yaml trains into {config.out}, not this folder")
        check_run_folder(config, resume=True)
        return f"**resumed**: {jobs.launch('', run_dir, resume=True).detail}"
    except LmforgeError as error:
        return f"**Error:** {error}"


def _component(gr: Any, field: FormField) -> Any:
    """The widget for one config key (labelled with the key, its help text from the schema as info)."""
    common: dict[str, Any] = {
        "label": field.key,
        "info": field.help or None,
        "elem_id": "train-" + field.key.replace(".", "-"),
    }
    if field.kind == "choice":  # an optional one can be set back to empty (the library's default)
        return gr.Dropdown(([""] if field.optional else []) + list(field.choices or ()), value=field.default, **common)
    if field.kind == "choices":
        return gr.Dropdown(list(field.choices or ()), value=list(field.default or []), multiselect=True, **common)
    if field.kind == "check":
        return gr.Checkbox(value=bool(field.default), **common)
    if field.kind in ("integer", "number"):
        common["label"] += " (0 = off)" if field.optional else ""
        return gr.Number(field.default or 0, precision=0 if field.kind == "integer" else None, **common)
    if field.kind == "json":
        return gr.Code(language="json", lines=3, label=f"{field.key}: {field.help}", elem_id=common["elem_id"])
    if field.kind == "path":  # choices: the allowed folders' models and data, filled when the page loads
        return gr.Dropdown([], value=field.default, allow_custom_value=True, **common)
    return gr.Textbox(value=",".join(field.default) if isinstance(field.default, list) else field.default, **common)


def build(app: Any, workspace: Workspace) -> None:
    """The tab's components and events (inside the app's gr.Blocks)."""
    import gradio as gr

    from lmforge.data.builtin import BUILTIN_DATASETS

    fields = all_fields()
    components: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1):
            name = gr.Textbox("sft-1", label="run name (a folder under the runs folder)", elem_id="train-name")
            for field in fields:
                if field.key in MAIN:
                    components[field.key] = _component(gr, field)
            with gr.Accordion("advanced", open=False):
                for field in fields:
                    if field.key not in MAIN and not is_stage_setting(field.key):
                        components[field.key] = _component(gr, field)
            with gr.Accordion("stage settings (dpo/kto/orpo, rlhf, distill, mlm)", open=False):
                for field in fields:
                    if is_stage_setting(field.key):
                        components[field.key] = _component(gr, field)
            with gr.Row():
                show = gr.Button("Show YAML", elem_id="train-show")
                launch = gr.Button("Launch", variant="primary", elem_id="train-launch")
            message = gr.Markdown(elem_id="train-message")
            yaml_view = gr.Code(language="yaml", label="config (what `lmforge train` reads)", lines=12)
            with gr.Row():
                download = gr.DownloadButton("Download YAML")
                upload = gr.UploadButton("Load a YAML into the form", file_types=[".yaml", ".yml"], type="filepath")
        with gr.Column(scale=1):
            with gr.Row():
                run = gr.Dropdown([], label="watch run", allow_custom_value=True, elem_id="train-run", scale=3)
                refresh = gr.Button("↻", scale=0, min_width=40)
            with gr.Row():
                stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
                resume = gr.Button("Resume", elem_id="train-resume")
            action = gr.Markdown(elem_id="train-action")
            status = gr.Markdown(elem_id="train-status")
            curves = gr.LinePlot(x="step", y="loss", color="series", title="loss", height=300, elem_id="train-curves")
            log = gr.Textbox(label="log (last lines)", lines=10, max_lines=10, autoscroll=True)
    timer = gr.Timer(2.0)

    keys = list(components)
    inputs = [name, *components.values()]

    def form(name_value: str, *values: Any) -> tuple[str, dict[str, Any]]:
        return name_value, dict(zip(keys, values, strict=True))

    def runs(selected: str | None = None) -> Any:
        folders = [str(path) for path in workspace.run_folders()]
        return gr.update(choices=folders, value=selected or (folders[0] if folders else None))

    def pickers() -> list[Any]:
        models = [str(p) for p in workspace.model_folders()]
        data = list(BUILTIN_DATASETS) + [str(p) for p in workspace.data_files()]
        tokenizers = [str(p) for p in workspace.tokenizer_folders()]
        choices = {
            "init_from": models,
            "model.path": models,
            "model.tokenizer": tokenizers,
            "data.train": data,
            "data.eval": data,
            "rlhf.reward_model": models,
            "distill.teacher": models,
        }
        return [gr.update(choices=choices[key]) for key in PATHS]

    def on_show(*values: Any) -> FormResult:
        return preview_config(workspace, *form(*values))

    def on_launch(*values: Any) -> tuple[Any, ...]:
        result = launch_from_form(workspace, *form(*values))
        selected = str(workspace.run_path(values[0])) if not result.message.startswith("**Error") else None
        return (*result, runs(selected))

    def on_upload(path: str) -> list[Any]:
        try:
            name_value, values = form_values(workspace, path)
        except LmforgeError as error:
            raise gr.Error(str(error)) from None
        return [name_value, *(values[key] for key in keys)]

    app.load(lambda: [runs(), *pickers()], None, [run, *(components[key] for key in PATHS)])
    upload.upload(on_upload, upload, inputs)
    refresh.click(lambda value: runs(value), run, run)
    show.click(on_show, inputs, [yaml_view, message, download])
    launch.click(on_launch, inputs, [yaml_view, message, download, run])
    stop.click(lambda value: stop_run(workspace, value), run, action)
    resume.click(lambda value: resume_run(workspace, value), run, action)
    watch = [status, curves, log]
    timer.tick(lambda value: live_view(workspace, value), run, watch, show_progress="hidden")
    run.change(lambda value: live_view(workspace, value), run, watch, show_progress="hidden")
