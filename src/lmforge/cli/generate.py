"""`lmforge generate` and `lmforge chat`: thin wrappers over lmforge.generate."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from lmforge.generate.explain import StepExplanation
    from lmforge.generate.sampling import SamplingParams

ModelArg = Annotated[
    str,
    typer.Argument(
        help="A model folder, a training run folder, a LoRA adapter folder, or a hub "
        "id org/name[@revision] (downloaded into the HF cache)."
    ),
]
AdapterOpt = Annotated[str | None, typer.Option(help="A LoRA adapter (folder or run folder) applied on top of MODEL.")]
PresetOpt = Annotated[str | None, typer.Option(help="Sampling preset: precise, balanced (default), creative.")]
TemperatureOpt = Annotated[float | None, typer.Option(help="Temperature >= 0; 0 means greedy.")]
TopKOpt = Annotated[int | None, typer.Option("--top-k", help="Keep the k most likely tokens (0 = off).")]
TopPOpt = Annotated[float | None, typer.Option("--top-p", help="Nucleus: keep the smallest set reaching p (1 = off).")]
MinPOpt = Annotated[float | None, typer.Option("--min-p", help="Drop tokens below min-p x the top probability.")]
RepetitionOpt = Annotated[float | None, typer.Option("--repetition-penalty", help="> 1 discourages repeats.")]
MaxNewOpt = Annotated[
    int | None,
    typer.Option(
        "--max-new-tokens", help="Most tokens to generate (default 256, capped to the context the prompt leaves)."
    ),
]
StopOpt = Annotated[list[str] | None, typer.Option("--stop", help="Stop before this string (repeatable).")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed: the same seed and params reproduce the same text.")]
GreedyOpt = Annotated[bool, typer.Option("--greedy", help="Always take the most likely token.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: cuda when available).")]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, bfloat16, float16 (default: float32 on CPU).")]
DeviceMapOpt = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        help="auto: spread a model larger than one GPU over every GPU, then CPU memory (accelerate's "
        "big-model placement; also balanced, balanced_low_0, sequential). Replaces --device.",
    ),
]
TrustPickleOpt = Annotated[
    bool, typer.Option("--trust-pickle", help="Load pickle weights the scanner cannot prove safe (runs code!).")
]
TrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Run the Python code a hub model ships (read it first).")
]
QuantOpt = Annotated[
    str | None, typer.Option("--quant", help="Quantize while loading: int8 | nf4 (bitsandbytes) | int4 (torchao).")
]


def _params(
    preset: str | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
    repetition_penalty: float | None,
    max_new_tokens: int | None,
    stop: list[str] | None,
    seed: int | None,
    greedy: bool,
) -> SamplingParams:
    from lmforge.generate.sampling import sampling_params

    return sampling_params(
        preset,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        max_new_tokens=max_new_tokens,
        stop=stop or None,
        seed=seed,
        greedy=greedy or None,
    )


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, stderr=stderr)


def quiet_transformers() -> None:
    """Weight-loading progress bars and advisory warnings would interleave with the streamed text."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not the user's concern


def _explain_table(step: StepExplanation, stages: list[str]) -> Any:
    from rich.table import Table

    counts = ", ".join(f"{name} {count}" for name, count in step.kept_counts.items())
    table = Table(title=f"step {step.step}: chose {step.chosen_token!r} (kept: {counts})", title_justify="left")
    table.add_column("token")
    table.add_column("p after T", justify="right")  # after repetition penalty and temperature
    for stage in stages:
        table.add_column(f"kept {stage.replace('_', '-')}", justify="center")
    table.add_column("final p", justify="right")
    table.add_column("chosen", justify="center")
    for candidate in step.candidates:
        marks = ["yes" if candidate.kept[stage] else "no" for stage in stages]
        table.add_row(
            repr(candidate.token),
            f"{candidate.prob_temperature:.4f}",
            *marks,
            f"{candidate.final_prob:.4f}",
            "<-" if candidate.chosen else "",
        )
    return table


def generate_command(
    model: ModelArg,
    prompt: Annotated[str, typer.Argument(help="The prompt ('-' reads it from stdin).")],
    adapter: AdapterOpt = None,
    preset: PresetOpt = None,
    temperature: TemperatureOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    repetition_penalty: RepetitionOpt = None,
    max_new_tokens: MaxNewOpt = None,
    stop: StopOpt = None,
    seed: SeedOpt = None,
    greedy: GreedyOpt = False,
    chat_template: Annotated[
        bool,
        typer.Option("--chat-template/--raw", help="Wrap PROMPT as a user turn in the chat template, or send it raw."),
    ] = True,
    system: Annotated[str | None, typer.Option(help="A system prompt before PROMPT (chat template only).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show how each sampling stage chose every token.")] = False,
    explain_top: Annotated[int, typer.Option("--explain-top", help="Candidates shown per step with --explain.")] = 8,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    quant: QuantOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Generate a reply to PROMPT, streamed as it is produced."""
    from rich.markup import escape

    from lmforge.errors import UserInputError
    from lmforge.generate.generation import generate
    from lmforge.generate.load import load_model

    params = _params(preset, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, stop, seed, greedy)
    text = sys.stdin.read() if prompt == "-" else prompt
    if system is not None and not chat_template:
        raise UserInputError("--system needs the chat template; drop --raw or put the instructions in PROMPT")
    request: str | list[dict[str, str]] = text
    if system is not None:
        request = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    quiet_transformers()
    loaded = load_model(
        model,
        adapter=adapter,
        device=device,
        dtype=dtype,
        device_map=device_map,
        trust_pickle=trust_pickle,
        trust_remote_code=trust_remote_code,
        quant=quant,
    )

    def stream(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if chat_template and loaded.chat_template_source == "default" and not json_output:
        _console(stderr=True).print(
            "[dim]this tokenizer has no chat template: using chatml (a base model may answer better with --raw)[/dim]"
        )
    streaming = not (json_output or explain)
    result = generate(
        loaded,
        request,
        params,
        chat_template=chat_template,
        on_text=stream if streaming else None,
        explain=explain,
        explain_top=explain_top,
    )
    if json_output:
        payload = {"model": loaded.name, "params": params.model_dump(), **asdict(result)}
        typer.echo(json.dumps(payload, default=str))
        return
    if explain:
        console = _console()
        used = {name for step in result.steps for candidate in step.candidates for name in candidate.kept}
        stages = [name for name in ("top_k", "top_p", "min_p") if name in used]
        for step in result.steps:
            console.print(_explain_table(step, stages))
        console.print(f"[bold]text:[/bold] {result.text}")
    else:
        sys.stdout.write("\n")
    footer = _console(stderr=True)
    for note in result.notes:
        footer.print(f"[dim]note: {escape(note)}[/dim]")
    footer.print(
        f"[dim]{result.completion_tokens} tokens in {result.seconds:.2f} s, finish: {result.finish_reason}[/dim]"
    )


def chat_command(
    model: ModelArg,
    adapter: AdapterOpt = None,
    system: Annotated[str | None, typer.Option(help="System prompt for the conversation.")] = None,
    preset: PresetOpt = None,
    temperature: TemperatureOpt = None,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    min_p: MinPOpt = None,
    repetition_penalty: RepetitionOpt = None,
    max_new_tokens: MaxNewOpt = None,
    stop: StopOpt = None,
    seed: SeedOpt = None,
    greedy: GreedyOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    device_map: DeviceMapOpt = None,
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    quant: QuantOpt = None,
) -> None:
    """Talk to a model, turn by turn, through its chat template (/help inside lists the commands)."""
    from lmforge.generate.chat import chat_loop
    from lmforge.generate.load import load_model

    params = _params(preset, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens, stop, seed, greedy)
    quiet_transformers()
    loaded = load_model(
        model,
        adapter=adapter,
        device=device,
        dtype=dtype,
        device_map=device_map,
        trust_pickle=trust_pickle,
        trust_remote_code=trust_remote_code,
        quant=quant,
    )
    chat_loop(loaded, params, input_stream=sys.stdin, output_stream=sys.stdout, system=system)


def register(app: typer.Typer) -> None:
    """Adds this capability's commands to the lmforge app."""
    app.command("generate")(generate_command)
    app.command("chat")(chat_command)
