"""The Files tab: `lmforge inspect`, `lmforge scan` and `lmforge convert` on a model folder or an upload.

Nothing here loads a model: inspect reads headers only and never unpickles, scan walks pickle opcodes
without running them, and an uploaded file is scanned the moment it arrives, before anything else
touches it. Convert goes through lmforge's own gates (`safe_torch_load`: scan first, then
`torch.load(weights_only=True)`); the UI offers no way to trust a pickle the scanner refuses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lmforge.errors import LmforgeError, UserInputError

if TYPE_CHECKING:
    import pandas as pd

    from lmforge.ui.workspace import Workspace

GIB = 1024**3
VERDICT = {
    "safe": "<span class='lmf-good'>safe</span>",
    "unsafe": "<span class='lmf-bad'>unsafe</span>",
    "unproven": "<span class='lmf-bad'>cannot prove safe</span>",
    "error": "<span class='lmf-bad'>unreadable</span>",
    "not-needed": "<span class='lmf-good'>no code</span>",
}
# The headline for each of `lmforge scan`'s exit codes (lmforge.files.scan.ScanReport.exit_code).
SCAN_HEADLINE = {
    0: f"{VERDICT['safe']}: every file is proven safe to load",
    1: f"{VERDICT['unsafe']}: loading it would run code; do not load it",
    2: f"{VERDICT['unproven']}: something could not be proven safe or read (nothing unsafe found); do not load it",
}
TARGETS = ["auto (from the name)", "safetensors", "gguf", "onnx", "merged"]
QUANTS = ["f16", "f32", "bf16", "q8_0", "q4_0"]


class FilesView(NamedTuple):
    verdict: str  # markdown: the headline (safe / unsafe / ..., or what was converted)
    details: str  # markdown
    table: pd.DataFrame  # findings, or tensors, or written files


def target_path(workspace: Workspace, path: str, upload: str | None) -> Path:
    """An uploaded file (in gradio's upload folder), else a path inside the allowed folders, else a hub id's files
    as loading would fetch them (into the Hugging Face cache, as `lmforge scan org/name` does; nothing is loaded)."""
    from lmforge.hub.reference import locate_model

    if upload:
        return Path(upload)
    if not (path or "").strip():
        raise UserInputError("choose a file or folder, or upload a file")
    reference = workspace.model(path)
    return Path(reference) if Path(reference).is_absolute() else locate_model(reference, need="any").path


def scan_view(workspace: Workspace, path: str, upload: str | None) -> FilesView:
    """`lmforge scan`: every file's verdict (safe only when the allowlist proves it) and every finding; the headline
    follows the CLI's exit code (0 safe, 1 code would run, 2 cannot prove safe)."""
    import pandas as pd

    from lmforge.files.scan import scan_path

    try:
        target = target_path(workspace, path, upload)
        report = scan_path(target)
    except LmforgeError as error:
        return FilesView(f"**Error:** {error}", "", pd.DataFrame())
    headline = SCAN_HEADLINE[report.exit_code]
    lines = ["| file | format | verdict | globals |", "|---|---|---|---|"]
    for file in report.files:
        shown = ", ".join(file.globals[:6]) + (" …" if len(file.globals) > 6 else "")
        lines.append(
            f"| {_relative(file.path, target)} | {file.format} | {VERDICT.get(file.verdict, file.verdict)} | {shown} |"
        )
    findings = [
        {
            "file": _relative(file.path, target),
            "kind": f.kind,
            "global": f.global_name,
            "opcode": f.opcode,
            "offset": f.offset,
            "member": f.member,
            "why": f.message,
        }
        for file in report.files
        for f in file.findings
    ]
    return FilesView(f"### scan: {headline}", "\n".join(lines), pd.DataFrame(findings))


def inspect_view(workspace: Workspace, path: str, upload: str | None) -> FilesView:
    """`lmforge inspect`: format, parameters by dtype and component, quantization, safety, runtimes (headers only)."""
    import pandas as pd

    from lmforge.files.inspect import inspect_path
    from lmforge.hub.reference import locate_model

    try:
        report = inspect_path(locate_model(str(target_path(workspace, path, upload)), need="any").path)
    except LmforgeError as error:
        return FilesView(f"**Error:** {error}", "", pd.DataFrame())
    scan = report.scan
    verdict = f"### inspect: safety {VERDICT.get(scan.verdict, scan.verdict)}: {scan.detail}" if scan else "### inspect"
    total = report.total_params or 1
    lines = [
        f"- format **{report.format}**, {len(report.files)} file(s), {report.total_size_bytes / GIB:,.3f} GiB, "
        f"{report.tensor_count:,} tensors, **{report.total_params:,} parameters**"
    ]
    if report.architecture:
        lines.append(f"- architecture {report.architecture} ({report.model_type})")
    if report.num_experts:
        lines.append(
            f"- experts: {report.experts_per_token} of {report.num_experts} per token, "
            f"{report.active_params:,} active parameters"
        )
    lines.append(
        f"- quantization {report.quantization or 'none'}"
        + (f", {report.bits_per_weight:g} bits per weight" if report.bits_per_weight is not None else "")
    )
    lines.append(
        "- by dtype: "
        + ", ".join(f"{dtype} {count:,} ({count / total:.0%})" for dtype, count in report.params_by_dtype.items())
    )
    components = report.params_by_component.items()
    lines.append("- by component: " + ", ".join(f"{name} {count:,}" for name, count in components))
    if report.tokenizer:
        lines.append(
            "- tokenizer: "
            + ", ".join(
                f"{key} {value}" for key, value in report.tokenizer.items() if not isinstance(value, dict | list)
            )
        )
    lines += ["", "| runtime | loads it? | why |", "|---|---|---|"]
    lines += [f"| {r.runtime} | {'yes' if r.can_load else 'no'} | {r.reason} |" for r in report.runtimes]
    lines += [f"- note: {note}" for note in report.notes]
    tensors = pd.DataFrame(
        [
            {
                "tensor": t.name,
                "dtype": t.dtype,
                "shape": "×".join(map(str, t.shape)),
                "params": t.params,
                "component": t.component,
                "file": t.file,
            }
            for t in report.tensors
        ]
    )
    return FilesView(verdict, "\n".join(lines), tensors)


def convert_view(workspace: Workspace, path: str, upload: str | None, to: str, quant: str, name: str) -> FilesView:
    """`lmforge convert` into RUNS/exports/NAME; pickles are scanned first and refused unless proven safe."""
    import pandas as pd

    from lmforge.files.convert import convert_model
    from lmforge.hub.reference import locate_model

    try:
        source = locate_model(str(target_path(workspace, path, upload)), need="any").path
        clean = (name or "").strip() or re.sub(r"[^\w.-]+", "_", source.stem) + "-converted"
        destination = workspace.run_path(f"exports/{clean}")
        target = None if to.startswith("auto") else to
        chosen = target or ("gguf" if destination.suffix == ".gguf" else None)
        report = convert_model(
            source, destination, to=target, quant=quant if chosen == "gguf" else None, progress=False
        )
    except LmforgeError as error:
        return FilesView(f"**Error:** {error}", "", pd.DataFrame())
    lines = [
        f"- {report.tensor_count:,} tensors, {report.params:,} parameters, {report.size_bytes / GIB:,.3f} GiB, "
        f"{report.seconds:.1f} s",
        f"- checks: {report.checks}",
    ]
    lines += [f"- note: {note}" for note in report.notes]
    lines += [f"- skipped (not tensors): {', '.join(report.skipped)}"] if report.skipped else []
    verdict = (
        f"### converted to **{report.to}**{' ' + report.quant if report.quant else ''}: `{report.destination}` "
        f"({'read back and verified' if report.verified else 'NOT verified'})"
    )
    return FilesView(verdict, "\n".join(lines), pd.DataFrame({"written": report.files}))


def _relative(file: str, target: Path) -> str:
    path = Path(file)
    return str(path.relative_to(target)) if target.is_dir() and path.is_relative_to(target) else path.name


def build(app: Any, workspace: Workspace) -> None:
    """The tab's components and events (inside the app's gr.Blocks)."""
    import gradio as gr

    with gr.Row():
        with gr.Column(scale=1):
            path = gr.Dropdown(
                [],
                label="model folder or file (inside the allowed folders), or a hub id",
                allow_custom_value=True,
                elem_id="files-path",
            )
            upload = gr.File(
                label="or upload a file: it is scanned before anything else reads it",
                type="filepath",
                elem_id="files-upload",
            )
            with gr.Row():
                inspect = gr.Button("Inspect", elem_id="files-inspect")
                scan = gr.Button("Scan", elem_id="files-scan")
            with gr.Accordion("convert / export", open=False):
                to = gr.Dropdown(TARGETS, value=TARGETS[0], label="to")
                quant = gr.Dropdown(QUANTS, value="f16", label="GGUF quantization")
                name = gr.Textbox(label="output name, under RUNS/exports/ (.gguf, .onnx, .safetensors pick the format)")
                convert = gr.Button("Convert", elem_id="files-convert")
        with gr.Column(scale=2):
            verdict = gr.Markdown(elem_id="files-verdict")
            details = gr.Markdown(elem_id="files-details")
    table = gr.Dataframe(label="findings / tensors / files", wrap=True, elem_id="files-table")

    outputs = [verdict, details, table]
    app.load(lambda: gr.update(choices=[str(p) for p in workspace.model_files()]), None, path)
    upload.upload(lambda value: scan_view(workspace, "", value), upload, outputs)  # scan first, always
    inspect.click(lambda p, u: inspect_view(workspace, p, u), [path, upload], outputs)
    scan.click(lambda p, u: scan_view(workspace, p, u), [path, upload], outputs)
    convert.click(
        lambda p, u, t, q, n: convert_view(workspace, p, u, t, q, n), [path, upload, to, quant, name], outputs
    )
