"""The Chat tab: a streaming playground on any run's model, with `lmforge chat`'s presets and parameters,
the system prompt, and `lmforge generate --explain`'s per-token view of why each token was chosen.

Generation is `lmforge.generate.generation.generate` (transformers' own `generate`, its stop strings and
sampling chain); its text callback feeds a queue that the page drains as the reply grows. The history
is trimmed to the context exactly as `lmforge chat` trims it (`fit_context`).
"""

from __future__ import annotations

import html
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmforge.errors import LmforgeError, UserInputError

if TYPE_CHECKING:
    import pandas as pd

    from lmforge.generate.generation import GenerationResult
    from lmforge.generate.load import LoadedModel
    from lmforge.ui.workspace import Workspace

PARAMETERS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
EXPLAIN_COLUMNS = ["step", "token", "p after temperature", "final p", "kept", "candidates"]


@dataclass
class ModelHolder:
    """The one model the tab has loaded (a chat loads one at a time; loading another replaces it)."""

    path: str | None = None
    loaded: LoadedModel | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, workspace: Workspace, model: str) -> LoadedModel:
        from lmforge.generate.load import load_model

        if not model:
            raise UserInputError("choose a model (a run or model folder, or a hub id org/name)")
        path = workspace.model(model)
        with self.lock:
            if self.path != path or self.loaded is None:
                self.loaded, self.path = None, None
                self.loaded, self.path = load_model(path), path
            return self.loaded


def describe(loaded: LoadedModel) -> str:
    return (
        f"**{loaded.name}** on {loaded.device}: context {loaded.context_length:,} tokens, chat template "
        f"{loaded.chat_template_source}"
    )


def preset_values(preset: str) -> tuple[float, ...]:
    """The preset's temperature, top_k, top_p, min_p and repetition penalty (unset ones at their off value)."""
    from lmforge.generate.sampling import sampling_params

    params = sampling_params(preset)
    return tuple(getattr(params, name) for name in PARAMETERS)


def _text(content: Any) -> str:
    """A chat message's text, whether the page sent a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)


def stream_reply(
    loaded: LoadedModel, messages: list[dict[str, str]], params: Any, *, explain: bool, explain_top: int
) -> Iterator[tuple[str, GenerationResult | None]]:
    """(text so far, None) as each piece arrives, then (whole text, the GenerationResult)."""
    from lmforge.generate.generation import generate

    pieces: queue.Queue[tuple[str, Any]] = queue.Queue()

    def work() -> None:
        try:
            result = generate(
                loaded,
                messages,
                params,
                on_text=lambda text: pieces.put(("text", text)),
                explain=explain,
                explain_top=explain_top,
            )
            pieces.put(("done", result))
        except Exception as error:  # handed to the page's thread, which raises it there
            pieces.put(("error", error))

    threading.Thread(target=work, daemon=True).start()
    text = ""
    while True:
        kind, value = pieces.get()
        if kind == "text":
            text += value
            yield text, None
        elif kind == "done":
            yield value.text, value
            return
        else:
            raise value


def chat_turn(
    holder: ModelHolder,
    workspace: Workspace,
    model: str,
    message: str,
    history: list[dict[str, Any]],
    system: str,
    preset: str,
    temperature: float,
    top_k: float,
    top_p: float,
    min_p: float,
    repetition_penalty: float,
    max_new_tokens: float,
    seed: str,
    explain: bool,
    explain_top: float,
) -> Iterator[tuple[list[dict[str, str]], str, str, pd.DataFrame]]:
    """One user turn: yields (chat history, status, per-token HTML, explanation table) as the reply streams."""
    from lmforge.generate.chat import ChatSession, fit_context
    from lmforge.generate.sampling import sampling_params

    no_steps = explanation_frame([])
    turns = [{"role": item["role"], "content": _text(item["content"])} for item in history or []]
    if not (message or "").strip():
        yield turns, "type a message", "", no_steps
        return
    try:
        if str(seed or "").strip() and not str(seed).strip().isdigit():
            raise UserInputError(f"seed must be a whole number, got {seed!r}")
        loaded = holder.get(workspace, model)
        params = sampling_params(
            preset,
            temperature=temperature,
            top_k=int(top_k),
            top_p=top_p,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            max_new_tokens=int(max_new_tokens),
            seed=int(seed) if str(seed or "").strip() else None,
        )
        session = ChatSession(
            params=params, system=system.strip() or None, history=turns + [{"role": "user", "content": message}]
        )
        dropped = fit_context(loaded, session)
    except LmforgeError as error:
        yield turns, f"**Error:** {error}", "", no_steps
        return
    note = f" (dropped the {dropped} oldest turns to fit the context)" if dropped else ""
    try:
        for text, result in stream_reply(
            loaded, session.messages(), params, explain=explain, explain_top=int(explain_top)
        ):
            shown = [*session.history, {"role": "assistant", "content": text}]  # a new list per update
            if result is None:
                yield shown, f"generating…{note}", "", no_steps
                continue
            # An answer of only special tokens or whitespace leaves an empty bubble: the status says why.
            empty = "" if text.strip() else " · empty reply: the model ended its turn without text"
            status = (
                f"{result.completion_tokens} tokens in {result.seconds:.2f} s, finish: {result.finish_reason}"
                f"{empty}{note} · {describe(loaded)}"
            )
            yield shown, status, token_html(result.steps), explanation_frame(result.steps)
    except LmforgeError as error:
        yield turns + [{"role": "user", "content": message}], f"**Error:** {error}", "", no_steps


def token_html(steps: list[Any]) -> str:
    """The reply token by token, each shaded by the probability it was drawn with; hover for the runners-up."""
    if not steps:
        return ""
    spans = []
    for step in steps:
        chosen = next(c for c in step.candidates if c.chosen)
        others = ", ".join(f"{c.token!r} {c.final_prob:.2f}" for c in step.candidates[:5] if not c.chosen)
        kept = " → ".join(f"{name} {count}" for name, count in step.kept_counts.items())
        tip = f"step {step.step}: p {chosen.final_prob:.3f} (kept: {kept}); others: {others}"
        shade = int(255 - 155 * chosen.final_prob)
        spans.append(
            f"<span class='lmf-token' title='{html.escape(tip, quote=True)}' "
            f"style='background: rgb({shade}, {shade}, 255)'>{html.escape(step.chosen_token)}</span>"
        )
    return (
        "<p>each token shaded by the probability it was drawn with (darker = surer); hover for the stages "
        "and the runners-up</p><div class='lmf-record'>" + "".join(spans) + "</div>"
    )


def explanation_frame(steps: list[Any]) -> pd.DataFrame:
    """One row per generated token: what each sampling stage kept and the top candidates with their chances."""
    import pandas as pd

    rows = []
    for step in steps:
        chosen = next(c for c in step.candidates if c.chosen)
        rows.append(
            {
                "step": step.step,
                "token": repr(step.chosen_token),
                "p after temperature": round(chosen.prob_temperature, 4),
                "final p": round(chosen.final_prob, 4),
                "kept": " → ".join(f"{name} {count}" for name, count in step.kept_counts.items()),
                "candidates": ", ".join(
                    f"{c.token!r} {c.final_prob:.3f}" + ("" if all(c.kept.values()) else " (cut)")
                    for c in step.candidates[:6]
                ),
            }
        )
    return pd.DataFrame(rows, columns=EXPLAIN_COLUMNS)


def build(app: Any, workspace: Workspace) -> None:
    """The tab's components and events (inside the app's gr.Blocks)."""
    import gradio as gr

    from lmforge.generate.sampling import PRESETS

    holder = ModelHolder()
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(
                [],
                label="model (a run or model folder, or a hub id org/name[@revision])",
                allow_custom_value=True,
                elem_id="chat-model",
            )
            load = gr.Button("Load", elem_id="chat-load")
            system = gr.Textbox(label="system prompt", lines=2)
            preset = gr.Radio(list(PRESETS), value="balanced", label="sampling preset")
            temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="temperature (0 = greedy)")
            top_k = gr.Slider(0, 200, value=36, step=1, label="top_k (0 = off)")
            top_p = gr.Slider(0.01, 1, value=0.7, step=0.01, label="top_p (1 = off)")
            min_p = gr.Slider(0, 1, value=0, step=0.01, label="min_p (0 = off)")
            repetition_penalty = gr.Slider(0.5, 2, value=1.0, step=0.05, label="repetition penalty (1 = off)")
            max_new_tokens = gr.Number(64, label="max new tokens", precision=0, minimum=1)
            seed = gr.Textbox("", label="seed (empty: a new draw each time)")
            with gr.Row():
                explain = gr.Checkbox(False, label="explain each token", elem_id="chat-explain")
                explain_top = gr.Number(10, label="candidates per token", precision=0, minimum=1)
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="chat-status")
            chatbot = gr.Chatbot(height=380, elem_id="chat-history")
            with gr.Row():
                message = gr.Textbox(placeholder="message", show_label=False, scale=4, elem_id="chat-message")
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
                clear = gr.Button("Clear", scale=0)
            tokens = gr.HTML(elem_id="chat-tokens")
            explanation = gr.Dataframe(
                explanation_frame([]),
                label="why each token (the sampling stages)",
                wrap=True,
                elem_id="chat-explanation",
            )

    def on_load(value: str) -> str:
        try:
            return describe(holder.get(workspace, value))
        except LmforgeError as error:
            return f"**Error:** {error}"

    def turn(*values: Any) -> Iterator[tuple[Any, ...]]:
        for shown, note, token_view, table in chat_turn(holder, workspace, *values):
            yield shown, note, token_view, table, ""

    app.load(lambda: gr.update(choices=[str(path) for path in workspace.model_folders()]), None, model)
    load.click(on_load, model, status)
    preset.change(preset_values, preset, [temperature, top_k, top_p, min_p, repetition_penalty])
    inputs = [
        model,
        message,
        chatbot,
        system,
        preset,
        temperature,
        top_k,
        top_p,
        min_p,
        repetition_penalty,
        max_new_tokens,
        seed,
        explain,
        explain_top,
    ]
    outputs = [chatbot, status, tokens, explanation, message]
    send.click(turn, inputs, outputs)
    message.submit(turn, inputs, outputs)
    clear.click(lambda: ([], "", "", explanation_frame([])), None, [chatbot, status, tokens, explanation])
