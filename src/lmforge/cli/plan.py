"""`lmforge plan`, `lmforge models`, `lmforge gpus`: parse, call lmforge.plan, render.

Only typer and the planner's stdlib-only choice lists at import time: `lmforge plan ... --json` must
start cold in well under 0.5 s, so the planner, rich and matplotlib are imported inside the commands
that use them.
"""

from __future__ import annotations

import json
import math
from enum import Enum
from typing import TYPE_CHECKING, Any

import typer

from lmforge.plan.display import count_text, duration_text, money_text
from lmforge.plan.setup import (
    ATTENTION,
    KV_DTYPES,
    LOSSES,
    METHODS,
    OPTIMIZERS,
    PRECISIONS,
    RECOMPUTE,
    WEIGHT_FORMATS,
    TrainingSetup,
)

GIB = 1024**3
_OFFLOAD = ["none", "optimizer", "params", "both"]  # lmforge.plan.layout.OFFLOAD_CHOICES, without importing the search
_DEFAULT = TrainingSetup()  # the method knobs' defaults, the same as lmforge train's


def _choices(name: str, values: list[str]) -> type[Enum]:
    """A str Enum whose values are the allowed spellings: typer shows them in --help and rejects others."""
    # mypy reads a call of Enum itself as a member lookup, not typeshed's functional-API overload (type[Enum]).
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


if TYPE_CHECKING:
    from rich.console import Console

    from lmforge.plan import Plan

    # The choices are built at run time from the planner's lists, which mypy cannot follow: to it, plain Enums.
    Task = Enum
    Method = Enum
    Precision = Enum
    Quant = Enum
    Optimizer = Enum
    Recompute = Enum
    Offload = Enum
    KvDtype = Enum
    Attention = Enum
    Loss = Enum
else:
    Task = _choices("Task", ["train", "infer"])
    Method = _choices("Method", list(METHODS))
    Precision = _choices("Precision", list(PRECISIONS))
    Quant = _choices("Quant", list(WEIGHT_FORMATS))
    Optimizer = _choices("Optimizer", list(OPTIMIZERS))
    Recompute = _choices("Recompute", list(RECOMPUTE))
    Offload = _choices("Offload", _OFFLOAD)
    KvDtype = _choices("KvDtype", list(KV_DTYPES))
    Attention = _choices("Attention", list(ATTENTION))
    Loss = _choices("Loss", list(LOSSES))


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:,.2f} GiB"


def _gb_and_gib(value: float) -> str:
    return f"{value / 1e9:,.1f} GB ({value / GIB:,.1f} GiB)"


def _gpus(count: float) -> str:
    return f"{count:g} GPU" + ("" if count == 1 else "s")


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def plan_command(
    model: str | None = typer.Argument(
        None, help="Catalog name (see `lmforge models`), hub id, model folder or config.json (or use --from-config)."
    ),
    from_config: str | None = typer.Option(
        None,
        "--from-config",
        help="Plan exactly what this `lmforge train` config will run (model, method, batch, ...).",
    ),
    task: Task = typer.Option("train", "--task", case_sensitive=False, help="Plan training or inference."),
    method: Method = typer.Option("full", "--method", case_sensitive=False, help="Training method."),
    precision: Precision = typer.Option(
        "bf16-mixed", "--precision", case_sensitive=False, help="Training precision (-mixed keeps fp32 master weights)."
    ),
    quant: Quant | None = typer.Option(
        None,
        "--quant",
        case_sensitive=False,
        help="Inference weight format (default from --precision); for --method qlora: nf4/int4 = 4-bit, int8 = 8-bit base.",
    ),
    optimizer: Optimizer = typer.Option("adamw", "--optimizer", case_sensitive=False),
    batch_size: int = typer.Option(
        1, "--batch-size", help="Micro-batch per GPU (training) or concurrent sequences (inference)."
    ),
    seq_len: int | None = typer.Option(
        None,
        "--seq-len",
        help="Training sequence length (default 2048), or inference context, prompt + generated (default 4096, or the model's own if shorter).",
    ),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Gradient accumulation steps."),
    grad_ckpt: Recompute | None = typer.Option(
        None,
        "--grad-ckpt",
        case_sensitive=False,
        help="Activation recomputation (default: full for lora/qlora as their recipes do, else pulled only when it saves GPUs).",
    ),
    attention: Attention = typer.Option("sdpa", "--attention", case_sensitive=False, help="Attention kernel."),
    loss: Loss | None = typer.Option(
        None,
        "--loss",
        case_sensitive=False,
        help="standard (full fp32 logits), chunked (trl's chunked head), fused (Liger, CUDA); default: chunked only when it saves GPUs.",
    ),
    offload_activations: bool = typer.Option(
        False, "--offload-activations", help="Saved activations to CPU RAM (torchtune)."
    ),
    optimizer_in_backward: bool = typer.Option(
        False,
        "--optimizer-in-backward",
        help="Step each parameter as its gradient arrives (torchtune optimizer_in_bwd).",
    ),
    lora_rank: int = typer.Option(_DEFAULT.lora_r, "--lora-rank", help="LoRA rank r (method.lora_r)."),
    lora_alpha: int = typer.Option(_DEFAULT.lora_alpha, "--lora-alpha", help="LoRA alpha (method.lora_alpha)."),
    lora_targets: str | None = typer.Option(
        None,
        "--lora-targets",
        help="Comma-separated modules LoRA wraps, e.g. q_proj,v_proj (default: all linear layers).",
    ),
    freeze_layers: int = typer.Option(
        _DEFAULT.trainable_layers,
        "--freeze-layers",
        help="--method freeze: how many of the last layers train (method.trainable_layers).",
    ),
    virtual_tokens: int = typer.Option(
        _DEFAULT.num_virtual_tokens, "--virtual-tokens", help="--method prompt/prefix: virtual tokens."
    ),
    levers: bool = typer.Option(
        True,
        "--levers/--no-levers",
        help="Let the planner turn on cheap memory techniques you left open to need fewer GPUs.",
    ),
    zero: int | None = typer.Option(None, "--zero", min=0, max=3, help="ZeRO stage (default: searched)."),
    offload: Offload = typer.Option(
        "none", "--offload", case_sensitive=False, help="CPU offload (ZeRO-Offload/Infinity)."
    ),
    tp: int | None = typer.Option(None, "--tp", help="Tensor-parallel degree (default: searched)."),
    pp: int | None = typer.Option(None, "--pp", help="Pipeline-parallel degree (default: searched)."),
    ep: int | None = typer.Option(None, "--ep", help="Expert-parallel degree for MoE models (default: searched)."),
    gpu: str | None = typer.Option(None, "--gpu", help="Accelerator (see `lmforge gpus`); default a100-80g."),
    gpus: int | None = typer.Option(None, "--gpus", help="Use exactly this many GPUs (default: the fewest that fit)."),
    gpu_mem: float | None = typer.Option(
        None, "--gpu-mem", help="Custom GPU memory in GiB (keeps --gpu's speed figures)."
    ),
    kv_dtype: KvDtype | None = typer.Option(None, "--kv-dtype", case_sensitive=False),
    prompt_len: int | None = typer.Option(
        None, "--prompt-len", help="Inference: tokens prefilled per request (default: all of --seq-len)."
    ),
    target_rps: float | None = typer.Option(
        None, "--target-rps", help="Inference: requests per second the fleet must serve."
    ),
    tokens: float | None = typer.Option(None, "--tokens", help="Training tokens for time and cost (default 1e9)."),
    mfu: float = typer.Option(0.40, "--mfu", help="Model FLOPs utilisation assumed for time estimates."),
    headroom: float = typer.Option(0.10, "--headroom", help="Share of each GPU's memory kept free."),
    price: float | None = typer.Option(None, "--price", help="$ per GPU-hour (default: the catalog's typical price)."),
    simulate: bool = typer.Option(False, "--simulate", help="Also measure one real step on fake tensors (training)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: str | None = typer.Option(None, "--plot", help="Write a stacked-bar PNG of the breakdown to this file."),
) -> None:
    """Will it fit, on how many GPUs, laid out how, and how long will it take."""
    from lmforge.errors import UserInputError
    from lmforge.plan.planner import plan_task

    targets = [name.strip() for name in lora_targets.split(",") if name.strip()] if lora_targets is not None else None
    if lora_targets is not None and not targets:
        raise UserInputError("--lora-targets needs module names, e.g. q_proj,v_proj")
    if tokens is not None and (not math.isfinite(tokens) or tokens < 1 or tokens != int(tokens)):
        raise UserInputError(f"--tokens must be a positive whole number, got {tokens:g}")
    whole_tokens = None if tokens is None else int(tokens)
    if from_config is not None:
        if model is not None:
            raise UserInputError("give a MODEL or --from-config RUN.yaml, not both: the config names its model")
        if task.value != "train":
            raise UserInputError("--from-config plans the training run the config describes; it has no --task infer")
        from lmforge.train.planning import plan_config

        plan = plan_config(
            from_config,
            gpu=gpu,
            gpus=gpus,
            gpu_mem_gib=gpu_mem,
            zero=zero,
            offload=offload.value,
            tokens=whole_tokens,
            mfu=mfu,
            price_per_gpu_hour=price,
            headroom=headroom,
            simulate=simulate,
        )
    elif model is None:
        raise UserInputError(
            "lmforge plan needs a MODEL (catalog name, hub id, folder or config.json) or --from-config RUN.yaml"
        )
    else:
        from lmforge.hub.spec import model_spec

        plan = plan_task(
            model_spec(model),
            task.value,
            precision=precision.value,
            quant=_value(quant),
            batch_size=batch_size,
            seq_len=seq_len,
            method=method.value,
            optimizer=optimizer.value,
            grad_accum=grad_accum,
            recompute=_value(grad_ckpt),
            attention=attention.value,
            loss=_value(loss),
            offload_activations=offload_activations,
            optimizer_in_backward=optimizer_in_backward,
            lora_r=lora_rank,
            lora_alpha=lora_alpha,
            target_modules=targets,
            trainable_layers=freeze_layers,
            num_virtual_tokens=virtual_tokens,
            levers=levers,
            zero=zero,
            offload=offload.value,
            tp=tp,
            pp=pp,
            ep=ep,
            gpu=gpu,
            gpus=gpus,
            gpu_mem_gib=gpu_mem,
            tokens=whole_tokens,
            mfu=mfu,
            price_per_gpu_hour=price,
            headroom=headroom,
            simulate=simulate,
            kv_dtype=_value(kv_dtype),
            prompt_len=prompt_len,
            target_requests_per_second=target_rps,
        )
    if plot:
        from lmforge.plan.plot import plot_breakdown

        plot_breakdown(plan, plot)
    if as_json:
        _print_json(plan.to_dict())
        return
    _render(plan, plot)


def _render(plan: Plan, plot: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    data = plan.to_dict()
    model, layout, memory = data["model"], data["layout"], data["memory"]
    active = f", {count_text(model['params_active'])} active" if model["params_active"] != model["params_total"] else ""
    trainable = f", {count_text(model['params_trainable'])} trainable" if plan.task == "train" else ""
    console.print(
        f"[bold]{model['name']}[/bold] ({model['architecture']}): {count_text(model['params_total'])} params{active}{trainable}"
    )
    console.print(f"[dim]{_setup_line(plan.task, data['setup'])}[/dim]")

    verdict = "[green]fits[/green]" if layout["fits"] else "[red]does NOT fit[/red]"
    console.print(
        f"\n{verdict}: {layout['gpus']} × {plan.accelerator.name} ({plan.accelerator.memory_gib:g} GiB), "
        f"DP {layout['dp']} × TP {layout['tp']} × PP {layout['pp']}"
        + (f" (EP {layout['ep']})" if layout["ep"] > 1 else "")
        + (f", ZeRO-{layout['zero_stage']}" if layout["zero_stage"] else "")
        + (" + offload" if layout["offload_optimizer"] or layout["offload_params"] else "")
        + (" + sequence parallel" if layout["sequence_parallel"] else "")
    )
    console.print(f"[dim]why: {layout['reason']}[/dim]")
    if layout.get("engine"):
        console.print(f"[yellow]lmforge train cannot run this layout[/yellow]: it needs {layout['engine']}")
    for lever in data["levers"]:
        console.print(f"lever pulled: [bold]{lever['name']}[/bold] ({lever['setting']}): {lever['cost']}")

    table = Table(title="Memory per GPU (GiB = 2^30 bytes)", title_justify="left")
    table.add_column("category")
    table.add_column("GiB", justify="right")
    table.add_column("share", justify="right")
    total = memory["per_gpu_bytes"] or 1
    for category, value in memory["breakdown"].items():
        if value:
            table.add_row(category, f"{value / GIB:,.2f}", f"{100 * value / total:.0f}%")
    table.add_row("[bold]total[/bold]", f"[bold]{memory['per_gpu_bytes'] / GIB:,.2f}[/bold]", "")
    table.add_row("usable (after headroom)", f"{memory['usable_bytes'] / GIB:,.2f}", "")
    if memory["cpu_offload_bytes"]:
        table.add_row("CPU RAM (offloaded)", f"{memory['cpu_offload_bytes'] / GIB:,.2f}", "")
    console.print(table)

    _render_throughput(console, plan, data["throughput"])
    _render_rules(console, data["rules_of_thumb"])
    _render_verdicts(console, plan, data["verdicts"])
    if data.get("simulation"):
        simulation = data["simulation"]
        console.print(
            f"Simulated peak (one real step on fake tensors, no CUDA context): {simulation['total_bytes'] / GIB:,.2f} GiB "
            f"vs planned {(memory['per_gpu_bytes'] - memory['breakdown']['overhead']) / GIB:,.2f} GiB without overhead"
            + (" [dim](1 GPU, no parallelism)[/dim]" if layout["gpus"] > 1 else "")
        )
    replicas = data.get("replicas")
    if replicas and (replicas["per_gpu"] > 1 or replicas["target_requests_per_second"]):
        line = f"replicas: {replicas['per_gpu']} per GPU, {replicas['per_node']} per node"
        if replicas["requests_per_second_per_replica"]:
            line += f"; {replicas['requests_per_second_per_replica']:,.2f} requests/s each"
        if replicas["replicas_needed"]:
            line += (
                f"; {replicas['target_requests_per_second']:g} requests/s need {replicas['replicas_needed']} replicas "
                f"on {_gpus(replicas['gpus_needed'])}"
            )
        console.print(line)
    _render_assumptions(console, data["assumptions"])
    for note in data["notes"]:
        if note.startswith("lever pulled:"):
            continue  # shown above
        console.print(f"[dim]note: {note}[/dim]")
    if plot:
        console.print(f"plot written to {plot}")


def _setup_line(task: str, setup: dict) -> str:
    """The inputs that matter for this task and method, in the words of the CLI options."""
    if task == "infer":
        return (
            f"infer: {setup['weight_format']} weights, {setup['kv_dtype']} KV cache, "
            f"{setup['batch_size']} × {setup['context_len']} tokens of context"
        )
    parts = [setup["method"], setup["precision"], setup["optimizer"]]
    parts.append(
        f"micro-batch {setup['micro_batch_size']} × {setup['seq_len']} tokens, grad-accum {setup['grad_accum']}"
    )
    parts.append(f"recompute {setup['recompute']}")
    parts.append(f"{setup['attention']} attention, {setup['loss']} loss")
    if setup["offload_activations"]:
        parts.append("activations offloaded")
    if setup["optimizer_in_backward"]:
        parts.append("optimizer in backward")
    method = setup["method"]
    if method in ("lora", "qlora"):
        targets = ",".join(setup["target_modules"]) if setup["target_modules"] else "all linear"
        parts.append(f"rank {setup['lora_r']}, alpha {setup['lora_alpha']}, on {targets}")
    if method == "qlora":
        parts.append(f"{setup['quant_bits']}-bit base")
    if method == "freeze":
        parts.append(f"last {setup['trainable_layers']} layers train")
    if method in ("prompt", "prefix"):
        parts.append(f"{setup['num_virtual_tokens']} virtual tokens")
    return "train: " + ", ".join(parts)


def _render_throughput(console: Console, plan: Plan, figures: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title="Time and cost (upper-bound speed at the MFU assumption)", title_justify="left", show_header=False
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    if plan.task == "train":
        table.add_row("tokens", f"{figures['tokens']:,.0f}")
        table.add_row("FLOPs (model + recompute)", f"{figures['model_flops']:.3e} + {figures['recompute_flops']:.3e}")
        table.add_row("MFU assumed", f"{figures['mfu']:.0%}")
        if figures["pipeline_bubble"]:
            table.add_row("pipeline bubble (1F1B idle share)", f"{figures['pipeline_bubble']:.0%}")
        if figures["tokens_per_second"] is not None:
            table.add_row("tokens/s (all GPUs)", f"{figures['tokens_per_second']:,.0f}")
            table.add_row(f"step ({figures['tokens_per_step']:,} tokens)", duration_text(figures["step_seconds"]))
        table.add_row("wall time", duration_text(figures["wall_seconds"]))
        table.add_row("GPU-hours", "-" if figures["gpu_hours"] is None else f"{figures['gpu_hours']:,.1f}")
        price = figures["price_usd_per_gpu_hour"]
        table.add_row(f"cost{'' if price is None else f' at ${price:g}/GPU-hour'}", money_text(figures["cost_usd"]))
    else:
        rate = figures["decode_tokens_per_second"]
        bound = figures["decode_bound"]
        table.add_row(
            f"decode tokens/s per sequence ({bound or 'no decode'} bound)", "-" if rate is None else f"{rate:,.1f}"
        )
        total = figures["decode_tokens_per_second_total"]
        table.add_row("decode tokens/s, whole batch", "-" if total is None else f"{total:,.1f}")
        table.add_row("bytes read per decode step", _gib(figures["bytes_read_per_step"]))
        table.add_row("prefill (compute bound)", duration_text(figures["prefill_seconds"]))
        table.add_row("time to first token", duration_text(figures["time_to_first_token_seconds"]))
    console.print(table)


def _render_assumptions(console: Console, assumptions: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="Assumptions (not measured for this run: they move the figures above)", title_justify="left")
    for column in ("assumption", "value", "rests on", "change with"):
        table.add_column(column)
    for item in assumptions:
        table.add_row(item["name"], item["value"], item["basis"], item["change"])
    console.print(table)


def _render_rules(console: Console, rules: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="Rules of thumb beside the precise figure", title_justify="left")
    for column in ("rule", "formula", "rule says", "planner says"):
        table.add_column(column, justify="right" if column.endswith("says") else "left")
    for rule in rules:
        if rule["unit"] == "gpus":
            said, precise = _gpus(rule["value"]), "-" if rule["precise"] is None else _gpus(rule["precise"])
        elif rule["unit"] == "tokens/s":
            said = f"{rule['value']:,.1f} tokens/s"
            precise = "-" if rule["precise"] is None else f"{rule['precise']:,.1f} tokens/s"
        else:
            said, precise = _gb_and_gib(rule["value"]), _gb_and_gib(rule["precise"])
        table.add_row(f"{rule['name']} [dim]({rule['source']})[/dim]", rule["formula"], said, precise)
    console.print(table)
    for rule in rules:
        console.print(f"[dim]  why {rule['name']} differs: {rule['why_they_differ']}[/dim]")


def _render_verdicts(console: Console, plan: Plan, verdicts: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not verdicts:
        return
    table = Table(title="Every GPU type: the fewest that fit", title_justify="left")
    columns = ["GPU", "memory", "GPUs", "layout", "per GPU"]
    columns += ["time", "cost"] if plan.task == "train" else ["decode tok/s"]
    requested = verdicts[0]["fits_requested"] is not None
    if requested:
        columns.append(f"fits {plan.layout.gpus}?")
    for column in columns:
        table.add_column(column, justify="left" if column in ("GPU", "layout") else "right")
    for verdict in verdicts:
        fits = verdict["min_gpus"] is not None
        row = [
            verdict["gpu"],
            f"{verdict['memory_gib']:g} GiB",
            str(verdict["min_gpus"]) if fits else "[red]-[/red]",
            verdict["layout"] if fits else f"[red]{verdict['layout']}[/red]",
            _gib(verdict["per_gpu_bytes"]),
        ]
        if plan.task == "train":
            row += [
                duration_text(None if verdict["hours"] is None else verdict["hours"] * 3600),
                money_text(verdict["cost_usd"]),
            ]
        else:
            rate = verdict["decode_tokens_per_second"]
            row.append("-" if rate is None else f"{rate:,.0f}")
        if requested:
            row.append("[green]yes[/green]" if verdict["fits_requested"] else "[red]no[/red]")
        table.add_row(*row, style="bold" if plan.cheapest is not None and verdict["gpu"] == plan.cheapest.gpu else None)
    console.print(table)
    cheapest = plan.cheapest
    if cheapest is not None:
        console.print(
            f"cheapest card for this run: {cheapest.min_gpus} × {cheapest.gpu}, {money_text(cheapest.cost_usd)}"
        )


def models_command(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """The built-in model catalog: names to pass to `lmforge plan`."""
    from lmforge.plan.models import catalog_rows

    rows = catalog_rows()
    if as_json:
        _print_json({"models": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Model catalog (lmforge plan NAME)")
    for column in ("name", "hub id", "params", "active", "arch", "layers", "heads / kv", "context", "licence"):
        table.add_column(
            column,
            justify="right" if column in ("params", "active", "layers", "context") else "left",
            no_wrap=column == "name",
        )
    for row in rows:
        table.add_row(
            row["name"],
            row["hf_id"] or "-",
            f"{row['params_total'] / 1e9:,.2f}B",
            f"{row['params_active'] / 1e9:,.2f}B",
            row["architecture"],
            str(row["layers"]),
            f"{row['heads']} / {row['kv_heads']}",
            "-" if row["context_tokens"] is None else f"{row['context_tokens']:,}",
            row["license"],
        )
    Console().print(table)


def gpus_command(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """The accelerator catalog: memory, bandwidth and dense peak FLOP/s (datasheet, no sparsity)."""
    from lmforge.plan.hardware import list_accelerators

    accelerators = list_accelerators()
    if as_json:
        _print_json({"gpus": [a.to_dict() for a in accelerators]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Accelerator catalog (lmforge plan ... --gpu NAME)")
    for column in ("name", "model", "memory", "bandwidth", "bf16 TFLOP/s", "fp16 TFLOP/s", "$/hour"):
        table.add_column(column, justify="left" if column in ("name", "model") else "right", no_wrap=column == "name")
    for a in accelerators:
        table.add_row(
            a.name,
            a.display_name,
            f"{a.memory_gib:g} GiB",
            f"{a.bandwidth_gb_s:,.0f} GB/s",
            "-" if a.bf16_tflops is None else f"{a.bf16_tflops:g}",
            "-" if a.fp16_tflops is None else f"{a.fp16_tflops:g}",
            "-" if a.price_usd_per_hour is None else f"{a.price_usd_per_hour:.2f}",
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
    app.command("models")(models_command)
    app.command("gpus")(gpus_command)
