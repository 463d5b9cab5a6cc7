"""The planner API: one call answers "will it fit, on how many GPUs, laid out how, how long, how much".

`plan_training(...)` and `plan_inference(...)` resolve the model, count its parameters, search the
layout on the chosen GPU (memory model per candidate), add time and cost, the rules of thumb
(plan/rules.py) beside the precise figures, and a verdict for every GPU type in the catalog. `Plan.to_dict()` is the
stable JSON the CLI prints with --json.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lmforge.errors import UserInputError
from lmforge.plan.assumptions import Assumption, plan_assumptions
from lmforge.plan.hardware import GIB, Accelerator, custom_accelerator, get_accelerator, list_accelerators
from lmforge.plan.layout import DEFAULT_HEADROOM, LayoutChoice, LayoutRequest, LayoutSearch, engine_needed
from lmforge.plan.memory import activation_bytes, model_states_bytes
from lmforge.plan.models import resolve_model
from lmforge.plan.params import ParamCount, count_params, count_trainable_params, default_lora_targets
from lmforge.plan.rules import NOMINAL_BYTES_PER_WEIGHT, RuleOfThumb, inference_rules, training_rules
from lmforge.plan.setup import InferenceSetup, Layout, MemoryBreakdown, TrainingSetup
from lmforge.plan.spec import ModelSpec
from lmforge.plan.throughput import InferenceSpeed, TrainingTime, inference_speed, matmul_params, training_time

DEFAULT_GPU = "a100-80g"
DEFAULT_CONTEXT_TOKENS = 4096  # serving: prompt + generated tokens per sequence unless --seq-len says otherwise
DEFAULT_TRAINING_TOKENS = 1_000_000_000  # the time/cost figure is "per billion tokens" unless --tokens says otherwise


@dataclass(frozen=True)
class ModelSummary:
    name: str
    hf_id: str | None
    architecture: str
    params_total: int
    params_active: int
    params_trainable: int
    params_by_component: dict[str, int]


@dataclass(frozen=True)
class Verdict:
    """One GPU type: how many it takes (None: no layout fits), and what that costs."""

    gpu: str
    memory_gib: float
    min_gpus: int | None
    layout: str
    per_gpu_bytes: int | None
    fits_requested: bool | None  # with the user's --gpus count, when one was given
    hours: float | None  # training: wall time for the planned tokens on min_gpus
    cost_usd: float | None
    decode_tokens_per_second: float | None = None  # inference: per-sequence decode bound on min_gpus


@dataclass
class Plan:
    task: str  # "train" | "infer"
    model: ModelSummary
    setup: TrainingSetup | InferenceSetup
    accelerator: Accelerator
    choice: LayoutChoice
    throughput: TrainingTime | InferenceSpeed
    rules_of_thumb: list[RuleOfThumb]
    verdicts: list[Verdict]
    simulation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    levers: list[Lever] = field(default_factory=list)  # techniques the planner turned on to need fewer GPUs
    replicas: Replicas | None = None  # serving: copies per GPU and node, fleet for a request rate
    assumptions: list[Assumption] = field(default_factory=list)  # what its figures rest on, unmeasured here

    @property
    def layout(self) -> Layout:
        return self.choice.layout

    @property
    def memory(self) -> MemoryBreakdown:
        return self.choice.memory

    @property
    def fits(self) -> bool:
        return self.choice.fits

    @property
    def cheapest(self) -> Verdict | None:
        """The catalog card that runs the planned training for the least money (None for inference)."""
        priced = [(v, v.cost_usd) for v in self.verdicts if v.cost_usd is not None]
        return min(priced, key=lambda priced_verdict: priced_verdict[1])[0] if priced else None

    def to_dict(self) -> dict[str, Any]:
        layout = self.choice.layout
        return {
            "task": self.task,
            "model": asdict(self.model),
            "setup": asdict(self.setup),
            "gpu": self.accelerator.to_dict(),
            "layout": {
                "gpus": layout.gpus,
                "dp": layout.dp,
                "tp": layout.tp,
                "pp": layout.pp,
                "ep": layout.ep,
                "zero_stage": layout.zero_stage,
                "offload_optimizer": layout.offload_optimizer,
                "offload_params": layout.offload_params,
                "sequence_parallel": layout.sequence_parallel,
                "fits": self.choice.fits,
                "reason": self.choice.reason,
                "engine": engine_needed(layout, self.setup) if isinstance(self.setup, TrainingSetup) else None,
            },
            "memory": {
                "per_gpu_bytes": self.memory.total_bytes,
                "per_gpu_gib": round(self.memory.total_bytes / GIB, 3),
                "gpu_capacity_bytes": self.accelerator.memory_bytes,
                "usable_bytes": self.choice.usable_bytes,
                "breakdown": dict(self.memory.bytes_by_category),
                "cpu_offload_bytes": self.memory.cpu_offload_bytes,
            },
            "throughput": self.throughput.to_dict(),
            "rules_of_thumb": [rule.to_dict() for rule in self.rules_of_thumb],
            "verdicts": [asdict(verdict) for verdict in self.verdicts],
            "cheapest_gpu": None if self.cheapest is None else self.cheapest.gpu,
            "simulation": self.simulation,
            "levers": [lever.to_dict() for lever in self.levers],
            "replicas": None if self.replicas is None else self.replicas.to_dict(),
            "assumptions": [assumption.to_dict() for assumption in self.assumptions],
            "notes": list(self.notes),
        }


def _accelerator(gpu: str | None, gpu_mem_gib: float | None) -> Accelerator:
    base = get_accelerator(gpu) if gpu else None
    if gpu_mem_gib is not None:
        return custom_accelerator(gpu_mem_gib, base)
    return base or get_accelerator(DEFAULT_GPU)


def _resolve(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else resolve_model(model)


def _summary(spec: ModelSpec, trainable: int) -> tuple[ModelSummary, ParamCount]:
    counts = count_params(spec)
    summary = ModelSummary(
        name=spec.name,
        hf_id=spec.hf_id,
        architecture=spec.architecture,
        params_total=counts.total_params,
        params_active=counts.active_params,
        params_trainable=trainable,
        params_by_component=dict(counts.by_component),
    )
    return summary, counts


# Models whose positions are a learned table (GPT-2, BERT, RoBERTa): a longer sequence has no position to index.
_LEARNED_POSITIONS = {"gpt2", "bert", "roberta"}


def _check_context(spec: ModelSpec, tokens: int, task: str) -> str | None:
    """Refuse what the model cannot run by its own limits; warn (a note) where training can stretch them."""
    limit = spec.max_position_embeddings
    if not limit or tokens <= limit:
        return None
    if spec.model_type in _LEARNED_POSITIONS:
        raise UserInputError(
            f"{spec.name} has {limit:,} learned positions: a {tokens:,}-token sequence has no position embedding "
            f"beyond {limit:,}; use --seq-len {limit} or less"
        )
    if task == "infer":
        raise UserInputError(
            f"--seq-len {tokens:,} is beyond {spec.name}'s {limit:,}-token context (max_position_embeddings); "
            f"serve at most {limit:,} tokens, or a long-context variant of the model"
        )
    return (
        f"{tokens:,} tokens exceed {spec.name}'s {limit:,}-token context: training that long needs RoPE scaling "
        "(rope_scaling / YaRN) and long-context data, or the model will not generalise to it"
    )


@dataclass(frozen=True)
class Lever:
    """A memory technique the planner turned on by itself because it needs fewer GPUs, and what it costs."""

    name: str
    setting: str  # the option as the user would give it
    cost: str  # one line: what it costs in time

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def plan_training(
    model: str | ModelSpec,
    *,
    recompute: str | None = None,
    loss: str | None = None,
    zero: int | None = None,
    offload: str = "none",
    tp: int | None = None,
    pp: int | None = None,
    ep: int | None = None,
    gpu: str | None = None,
    gpus: int | None = None,
    gpu_mem_gib: float | None = None,
    tokens: int | None = None,
    mfu: float = 0.40,
    price_per_gpu_hour: float | None = None,
    headroom: float = DEFAULT_HEADROOM,
    levers: bool = True,
    verdicts: bool = True,
    simulate: bool = False,
    **setup_fields: Any,
) -> Plan:
    """Plan a training (or fine-tuning) run: per-GPU memory, GPU count and layout, time and cost.

    `setup_fields` are TrainingSetup's fields with its defaults (method, precision, optimizer, micro_batch_size,
    seq_len, grad_accum, lora_r, target_modules, trainable_layers, quant_bits, num_virtual_tokens ...), named as
    the training config names them. None for zero / tp / pp / ep / gpus lets the layout search choose; a given
    value is honoured and validated. `tokens` defaults to one billion (time and cost are then per billion tokens).

    `recompute` None follows the recipes (LLaMA-Factory, unsloth, axolotl, torchtune all turn gradient
    checkpointing on for LoRA and QLoRA; full and freeze tuning start without it) and `loss` None starts from
    the standard loss; with `levers`, the planner then pulls the cheap levers the user left open - trl's
    chunked loss, a smaller micro-batch with more accumulation, full recomputation - whenever they need
    fewer GPUs (or make a fixed --gpus fit), and the plan lists each one and its cost in time.
    """
    _check_cost_inputs(tokens, price_per_gpu_hour)
    spec = _resolve(model)
    setup = _training_setup(spec, recompute, loss, setup_fields)
    context_note = _check_context(spec, setup.seq_len, "train")
    open_levers = {
        "recompute": recompute is None,
        "loss": loss is None,
        "micro_batch": levers and not setup.optimizer_in_backward and setup.micro_batch_size > 1,
    }
    accelerator = _accelerator(gpu, gpu_mem_gib)
    trainable = count_trainable_params(
        spec,
        setup.method,
        lora_r=setup.lora_r,
        target_modules=list(setup.target_modules or []) or None,
        trainable_layers=setup.trainable_layers,
        num_virtual_tokens=setup.num_virtual_tokens,
    )
    summary, counts = _summary(spec, trainable)
    request = LayoutRequest(gpus=gpus, tp=tp, pp=pp, zero_stage=zero, offload=offload, ep=ep)
    time_for = _timer(spec, setup, counts, trainable, DEFAULT_TRAINING_TOKENS if tokens is None else tokens, mfu)

    base_setup = setup
    search = LayoutSearch(spec, setup, counts.total_params)
    choice = search.best(accelerator, request, headroom=headroom)
    if levers and any(open_levers.values()):
        setup, search, choice = _pull_levers(
            spec, setup, open_levers, counts.total_params, accelerator, request, headroom, choice, search, time_for
        )
    pulled = _levers_pulled(base_setup, setup, time_for, accelerator, choice.layout)

    def time_on(card: Accelerator, n_gpus: int, layout: Layout) -> TrainingTime:
        # --price is what the user pays for their card; other cards in the verdict table keep catalog prices.
        price = (
            price_per_gpu_hour if price_per_gpu_hour is not None and card is accelerator else card.price_usd_per_hour
        )
        return time_for(setup, card, layout, price)

    throughput = time_on(accelerator, choice.gpus, choice.layout)
    if not choice.fits:
        throughput = replace(
            throughput, wall_seconds=None, gpu_hours=None, cost_usd=None, tokens_per_second=None, step_seconds=None
        )
    fewest = choice if gpus is None else search.best(accelerator, replace(request, gpus=None), headroom=headroom)
    rules = _training_rules(spec, setup, counts, trainable, accelerator, fewest, search.memory(Layout()))
    table = _verdicts(search, request, headroom, time_on=time_on) if verdicts else []
    plan = Plan("train", summary, setup, accelerator, choice, throughput, rules, table, levers=pulled)
    plan.assumptions = plan_assumptions(
        "train",
        mfu=mfu,
        headroom=headroom,
        recompute=setup.recompute,
        accelerator=accelerator,
        price_per_gpu_hour=price_per_gpu_hour,
    )
    plan.notes += [note for note in (context_note,) if note]
    plan.notes += _training_notes(
        spec,
        setup,
        counts,
        accelerator,
        request,
        headroom,
        choice,
        open_levers,
        pulled,
        tokens_given=tokens is not None,
    )
    if simulate:
        from lmforge.plan.simulate import simulate_training

        plan.simulation = simulate_training(spec, setup).to_dict()
    return plan


# Inference plans read none of these; with task "infer" each must keep its default (key: the CLI flag that sets it).
_TRAINING_ONLY: dict[str, tuple[str, Any]] = {
    "method": ("--method", TrainingSetup.method),
    "optimizer": ("--optimizer", TrainingSetup.optimizer),
    "grad_accum": ("--grad-accum", TrainingSetup.grad_accum),
    "recompute": ("--grad-ckpt", None),
    "attention": ("--attention", TrainingSetup.attention),
    "loss": ("--loss", None),
    "offload_activations": ("--offload-activations", TrainingSetup.offload_activations),
    "optimizer_in_backward": ("--optimizer-in-backward", TrainingSetup.optimizer_in_backward),
    "lora_r": ("--lora-rank", TrainingSetup.lora_r),
    "lora_alpha": ("--lora-alpha", TrainingSetup.lora_alpha),
    "target_modules": ("--lora-targets", None),
    "trainable_layers": ("--freeze-layers", TrainingSetup.trainable_layers),
    "num_virtual_tokens": ("--virtual-tokens", TrainingSetup.num_virtual_tokens),
    "zero": ("--zero", None),
    "offload": ("--offload", "none"),
    "ep": ("--ep", None),
    "tokens": ("--tokens", None),
    "price_per_gpu_hour": ("--price", None),
    "simulate": ("--simulate", False),
    "levers": ("--no-levers", True),
}
_INFERENCE_ONLY = ("kv_dtype", "prompt_len", "target_requests_per_second")  # --kv-dtype, --prompt-len, --target-rps
# What --quant may name for --method qlora: the bitsandbytes storage of the frozen base, in bits.
QLORA_QUANT = {"nf4": 4, "int4": 4, "int8": 8}
# An inference plan without --quant serves the weights in the half type of the training precision.
_INFERENCE_FORMAT = {"fp32": "fp32", "fp16-mixed": "fp16", "bf16-mixed": "bf16", "bf16": "bf16"}


def plan_task(
    model: str | ModelSpec,
    task: str = "train",
    *,
    precision: str = TrainingSetup.precision,
    quant: str | None = None,
    batch_size: int = 1,
    seq_len: int | None = None,
    **options: Any,
) -> Plan:
    """`lmforge plan MODEL`: plan_training or plan_inference from one set of options, as the command takes them.

    `quant` is the inference weight format (default: the half type of `precision`), or for method qlora the
    base's storage (nf4/int4 or int8); `batch_size` is the micro-batch (training) or the concurrent sequences
    (inference); `seq_len` None is 2048 for training, 4096 or the model's context for inference. Options of the
    other task given away from their defaults are one error naming each, by its CLI flag."""
    if task == "train":
        return _plan_training_task(model, precision, quant, batch_size, seq_len, options)
    if task != "infer":
        raise UserInputError(f"task {task!r} is not supported; choose one of: train, infer")
    given = [flag for name, (flag, default) in _TRAINING_ONLY.items() if options.pop(name, default) != default]
    if given:
        raise UserInputError(f"training-only options given with --task infer: {', '.join(given)}")
    weight_format = quant or _INFERENCE_FORMAT[precision]
    kv_dtype = options.pop("kv_dtype", None) or ("fp16" if weight_format == "fp16" else "bf16")
    return plan_inference(
        model, weight_format=weight_format, kv_dtype=kv_dtype, batch_size=batch_size, context_len=seq_len, **options
    )


def _plan_training_task(
    model: str | ModelSpec,
    precision: str,
    quant: str | None,
    batch_size: int,
    seq_len: int | None,
    options: dict[str, Any],
) -> Plan:
    if [name for name in _INFERENCE_ONLY if options.pop(name, None) is not None]:
        raise UserInputError("--kv-dtype, --prompt-len and --target-rps apply to --task infer only")
    method = options.get("method", TrainingSetup.method)
    if quant is not None and method != "qlora":
        raise UserInputError("--quant applies to --task infer, or to --method qlora (nf4/int4 or int8)")
    if quant is not None and quant not in QLORA_QUANT:
        raise UserInputError(
            f"--method qlora stores its base as nf4/int4 (4-bit) or int8 (bitsandbytes); --quant {quant} is not one of them"
        )
    if quant is not None:
        options["quant_bits"] = QLORA_QUANT[quant]
    return plan_training(
        model,
        precision=precision,
        micro_batch_size=batch_size,
        seq_len=TrainingSetup.seq_len if seq_len is None else seq_len,
        **options,
    )


def _check_cost_inputs(tokens: int | None, price_per_gpu_hour: float | None) -> None:
    if tokens is not None and tokens <= 0:
        raise UserInputError(f"--tokens must be positive, got {tokens}")
    if price_per_gpu_hour is not None and price_per_gpu_hour < 0:
        raise UserInputError(f"--price must be a non-negative $ per GPU-hour, got {price_per_gpu_hour}")


def _training_setup(spec: ModelSpec, recompute: str | None, loss: str | None, fields: dict[str, Any]) -> TrainingSetup:
    """The TrainingSetup asked for, with recompute and loss at their starting points and LoRA's targets resolved.

    The targets are resolved once here: the plan records which modules LoRA wraps, and the memory model prices
    hundreds of layouts without re-deriving the default targets each time."""
    method = fields.get("method", TrainingSetup.method)
    adapters = method in ("lora", "qlora")
    if adapters and not fields.get("target_modules"):
        fields = {**fields, "target_modules": default_lora_targets(spec)}
    elif not fields.get("target_modules"):
        fields = {**fields, "target_modules": None}
    return TrainingSetup(**fields, recompute=recompute or ("full" if adapters else "none"), loss=loss or "standard")


def _timer(
    spec: ModelSpec, setup: TrainingSetup, counts: ParamCount, trainable: int, tokens: int, mfu: float
) -> Callable[[TrainingSetup, Accelerator, Layout, float | None], TrainingTime]:
    """Time and cost of `run` (the setup, or a lever's variant of it) on a card and layout."""
    compute = matmul_params(spec, counts.active_params, counts.by_component["embeddings"])

    def time_for(run: TrainingSetup, card: Accelerator, layout: Layout, price: float | None) -> TrainingTime:
        return training_time(
            spec,
            compute_params=compute,
            trainable_params=trainable,
            method=setup.method,
            trainable_layers=setup.trainable_layers,
            seq_len=setup.seq_len,
            recompute=run.recompute,
            tokens=tokens,
            tokens_per_step=run.micro_batch_size * setup.seq_len * run.grad_accum * layout.dp,
            gpus=layout.gpus,
            peak_flops_per_gpu=card.peak_flops_per_second(setup.precision),
            mfu=mfu,
            price_usd_per_gpu_hour=price,
            pp=layout.pp,
            micro_batches=run.grad_accum,
            loss=run.loss,
        )

    return time_for


def _training_rules(
    spec: ModelSpec,
    setup: TrainingSetup,
    counts: ParamCount,
    trainable: int,
    accelerator: Accelerator,
    fewest: LayoutChoice,
    one_gpu: MemoryBreakdown,
) -> list[RuleOfThumb]:
    """The rules of thumb for this run, each beside the planner's precise figure."""
    return training_rules(
        params_total=counts.total_params,
        params_trainable=trainable,
        method=setup.method,
        precision=setup.precision,
        optimizer=setup.optimizer,
        half_bytes=4.0 if setup.precision == "fp32" else 2.0,
        vram_gb=accelerator.memory_gib,
        precise_gpus=fewest.gpus if fewest.fits else None,
        states_bytes_unsharded=model_states_bytes(spec, setup, Layout()),
        activation_bytes=activation_bytes(spec, setup, Layout()),
        training_bytes_one_gpu=one_gpu.total_bytes,
        setup_text=f"micro-batch {setup.micro_batch_size} × {setup.seq_len} tokens",
        shape=(spec.num_layers, spec.num_attention_heads, setup.micro_batch_size, setup.seq_len, spec.hidden_size),
    )


def _training_notes(
    spec: ModelSpec,
    setup: TrainingSetup,
    counts: ParamCount,
    accelerator: Accelerator,
    request: LayoutRequest,
    headroom: float,
    choice: LayoutChoice,
    open_levers: dict[str, bool],
    pulled: list[Lever],
    *,
    tokens_given: bool,
) -> list[str]:
    """What the user should know beside the figures: assumed tokens, levers pulled, a recompute hint."""
    notes = []
    if not tokens_given:
        notes.append("time and cost are for 1e9 training tokens; pass --tokens for your dataset")
    if not choice.fits:
        notes.append("no time or cost: the run does not fit as asked")
    for lever in pulled:
        notes.append(f"lever pulled: {lever.name} ({lever.setting}): {lever.cost}")
    if setup.recompute != "full" and not open_levers["recompute"] and (choice.gpus > 1 or not choice.fits):
        hint = _recompute_hint(spec, setup, counts.total_params, accelerator, request, headroom, choice)
        if hint:
            notes.append(hint)
    if setup.method in ("lora", "qlora") and setup.recompute == "full" and open_levers["recompute"] and not pulled:
        notes.append(
            "gradient checkpointing is on, as every LoRA/QLoRA recipe of LLaMA-Factory, unsloth, axolotl and "
            "torchtune turns it on (+1 forward of compute); --grad-ckpt none turns it off"
        )
    if setup.loss == "fused":
        notes.append("--loss fused runs Liger's kernel: CUDA and liger-kernel only")
    return notes


def _pull_levers(
    spec: ModelSpec,
    setup: TrainingSetup,
    open_levers: dict[str, bool],
    params_total: int,
    accelerator: Accelerator,
    request: LayoutRequest,
    headroom: float,
    choice: LayoutChoice,
    search: LayoutSearch,
    time_for: Callable[[TrainingSetup, Accelerator, Layout, float | None], TrainingTime],
) -> tuple[TrainingSetup, LayoutSearch, LayoutChoice]:
    """Every combination of the open levers, and the one with the fewest GPUs (a fixed --gpus: that fits), then
    a layout lmforge train runs, then the least compute, then the largest micro-batch."""
    recomputes = [setup.recompute] + (["full"] if open_levers["recompute"] and setup.recompute != "full" else [])
    losses = [setup.loss] + (["chunked"] if open_levers["loss"] and setup.loss == "standard" else [])
    micro_batches = [setup.micro_batch_size]
    if open_levers["micro_batch"]:
        size = setup.micro_batch_size
        while size % 2 == 0:
            size //= 2
            micro_batches.append(size)

    def rank(run: TrainingSetup, found: LayoutChoice) -> tuple[bool, int, bool, float, int]:
        flops = time_for(run, accelerator, found.layout, None).total_flops
        return (
            not found.fits,
            found.gpus if found.fits else 0,
            engine_needed(found.layout, run) is not None,
            flops,
            -run.micro_batch_size,
        )

    best = (rank(setup, choice), setup, search, choice)
    for recompute, loss, size in itertools.product(recomputes, losses, micro_batches):
        if (recompute, loss, size) == (setup.recompute, setup.loss, setup.micro_batch_size):
            continue
        accumulation = setup.grad_accum * setup.micro_batch_size // size
        run = replace(setup, recompute=recompute, loss=loss, micro_batch_size=size, grad_accum=accumulation)
        trial = LayoutSearch(spec, run, params_total)
        found = trial.best(accelerator, request, headroom=headroom)
        candidate = (rank(run, found), run, trial, found)
        if candidate[0] < best[0]:
            best = candidate
    return best[1], best[2], best[3]


def _levers_pulled(
    base: TrainingSetup,
    setup: TrainingSetup,
    time_for: Callable[[TrainingSetup, Accelerator, Layout, float | None], TrainingTime],
    accelerator: Accelerator,
    layout: Layout,
) -> list[Lever]:
    """What the lever search changed, each with its cost in compute against the setup it started from."""
    before = time_for(base, accelerator, layout, None).total_flops
    pulled = []
    if setup.loss != base.loss:
        extra = time_for(replace(base, loss=setup.loss), accelerator, layout, None).total_flops / before - 1
        pulled.append(
            Lever(
                "chunked cross-entropy",
                f"--loss {setup.loss}",
                f"logits never whole (trl's chunked head); recomputing them in backward adds {extra:.1%} compute",
            )
        )
    if setup.micro_batch_size != base.micro_batch_size:
        pulled.append(
            Lever(
                "smaller micro-batch",
                f"--batch-size {setup.micro_batch_size} --grad-accum {setup.grad_accum}",
                f"same {base.micro_batch_size * base.grad_accum}-sequence step and FLOPs, in smaller matmuls "
                "(lower utilisation on small batches, not modelled)",
            )
        )
    if setup.recompute != base.recompute:
        extra = time_for(replace(base, recompute=setup.recompute), accelerator, layout, None).total_flops / before - 1
        pulled.append(
            Lever(
                "gradient checkpointing",
                f"--grad-ckpt {setup.recompute}",
                f"activations re-computed in backward: {extra:+.0%} compute",
            )
        )
    return pulled


def _recompute_hint(
    spec: ModelSpec,
    setup: TrainingSetup,
    params_total: int,
    accelerator: Accelerator,
    request: LayoutRequest,
    headroom: float,
    choice: LayoutChoice,
) -> str | None:
    """Activations are often what forces extra GPUs (USERS.md: OOM); say when full recomputation fixes it."""
    recomputed = LayoutSearch(spec, replace(setup, recompute="full"), params_total).best(
        accelerator, request, headroom=headroom
    )
    if not recomputed.fits:
        return None
    if not choice.fits:
        return f"with --grad-ckpt full it fits: {recomputed.memory.total_bytes / GIB:.1f} GiB per GPU"
    if recomputed.gpus < choice.gpus:
        return f"with --grad-ckpt full it needs {recomputed.gpus} GPUs instead of {choice.gpus} (one more forward: ~1/3 more compute)"
    return None


@dataclass(frozen=True)
class Replicas:
    """Serving a model small enough to share a GPU: how many copies fit, and the fleet for a request rate."""

    per_gpu: int  # copies of the whole model (each its own process, CUDA context included) on one GPU
    per_node: int
    requests_per_second_per_replica: float | None  # at the planned batch, prompt and output lengths
    target_requests_per_second: float | None
    replicas_needed: int | None
    gpus_needed: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_inference(
    model: str | ModelSpec,
    *,
    weight_format: str = "bf16",
    kv_dtype: str = "bf16",
    batch_size: int = 1,
    context_len: int | None = None,
    prompt_len: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    gpu: str | None = None,
    gpus: int | None = None,
    gpu_mem_gib: float | None = None,
    mfu: float = 0.40,
    headroom: float = DEFAULT_HEADROOM,
    target_requests_per_second: float | None = None,
    verdicts: bool = True,
) -> Plan:
    """Plan serving: per-GPU memory (weights, KV cache, activations), GPUs and TP/PP, decode and prefill speed,
    and for a model that fits a fraction of a GPU, the replicas per GPU and node and the fleet for a target
    request rate (each request prefills `prompt_len` tokens and generates the rest of `context_len`).
    `context_len` None is 4096 tokens, or the model's whole context when that is shorter."""
    spec = _resolve(model)
    limit = spec.max_position_embeddings
    context_note = None
    if context_len is None:
        context_len = min(DEFAULT_CONTEXT_TOKENS, limit) if limit else DEFAULT_CONTEXT_TOKENS
        if context_len < DEFAULT_CONTEXT_TOKENS:
            context_note = f"context {context_len:,} tokens: {spec.name}'s whole context (the default is {DEFAULT_CONTEXT_TOKENS:,})"
    _check_context(spec, context_len, "infer")
    if target_requests_per_second is not None:
        if not target_requests_per_second > 0 or not math.isfinite(target_requests_per_second):
            raise UserInputError(
                f"--target-rps must be a positive number of requests per second, got {target_requests_per_second}"
            )
        if prompt_len is None:
            raise UserInputError(
                "--target-rps needs --prompt-len: the tokens each request prefills (the rest of --seq-len is generated)"
            )
    setup = InferenceSetup(
        weight_format=weight_format,
        kv_dtype=kv_dtype,
        batch_size=batch_size,
        context_len=context_len,
        prompt_len=prompt_len,
    )
    accelerator = _accelerator(gpu, gpu_mem_gib)
    summary, counts = _summary(spec, 0)
    request = LayoutRequest(gpus=gpus, tp=tp, pp=pp)
    search = LayoutSearch(spec, setup, counts.total_params)
    choice = search.best(accelerator, request, headroom=headroom)
    one_gpu = search.memory(Layout())
    encoder = spec.kind == "encoder"
    weights_read = _decode_weight_bytes(spec, counts, one_gpu["weights"], batch_size)

    def speed_on(card: Accelerator, tp: int) -> InferenceSpeed:
        speed = inference_speed(
            spec,
            weight_bytes_read=weights_read,
            kv_cache_bytes=one_gpu["kv_cache"],
            compute_params=matmul_params(spec, counts.active_params, counts.by_component["embeddings"]),
            batch_size=batch_size,
            prompt_tokens=setup.prefill_tokens,
            tp=tp,
            bandwidth_bytes_per_second=card.bandwidth_bytes_per_second,
            peak_flops_per_gpu=card.peak_flops_per_second(setup.weight_format),
            mfu=mfu,
        )
        if encoder:  # one forward pass per request: nothing is decoded token by token
            speed = replace(
                speed, decode_tokens_per_second=None, decode_tokens_per_second_total=None, decode_bound=None
            )
        return speed

    throughput = speed_on(accelerator, choice.layout.tp)
    if not choice.fits:
        throughput = replace(
            throughput,
            decode_tokens_per_second=None,
            decode_tokens_per_second_total=None,
            prefill_seconds=None,
            time_to_first_token_seconds=None,
            decode_bound=None,
        )
    rules = inference_rules(
        params_total=counts.total_params,
        bytes_per_weight=NOMINAL_BYTES_PER_WEIGHT[setup.weight_format],
        weight_format=setup.weight_format,
        precise_weight_bytes=one_gpu["weights"],
        precise_total_bytes=one_gpu.total_bytes,
        kv_cache_bytes=one_gpu["kv_cache"],
        bandwidth_gb_s=accelerator.bandwidth_gb_s,
        precise_decode_tokens_per_second=throughput.decode_tokens_per_second,
        tp=choice.layout.tp,
    )
    table = _verdicts(search, request, headroom, speed_on=speed_on) if verdicts else []
    plan = Plan("infer", summary, setup, accelerator, choice, throughput, rules, table)
    plan.assumptions = plan_assumptions(
        "infer", mfu=mfu, headroom=headroom, recompute=None, accelerator=accelerator, price_per_gpu_hour=None
    )
    if context_note:
        plan.notes.append(context_note)
    if encoder:
        plan.notes.append(
            f"{spec.name} is an encoder: one forward pass per request, no KV cache and no token-by-token decode"
        )
    if not choice.fits:
        plan.notes.append("no speed figures: the model does not fit as asked")
    elif choice.gpus == 1 and not encoder:
        plan.replicas = _replicas(choice, accelerator, throughput, setup, target_requests_per_second)
        if plan.replicas.per_gpu > 1:
            plan.notes.append(
                f"{plan.replicas.per_gpu} replicas fit one {accelerator.name} "
                f"({plan.replicas.per_node} per {accelerator.gpus_per_node}-GPU node)"
            )
    return plan


def _decode_weight_bytes(spec: ModelSpec, counts: ParamCount, weight_bytes: int, batch_size: int) -> int:
    """Weight bytes one decode step reads: every dense weight, and of the routed experts those the batch's tokens
    pick: each token takes k of E, so a batch of B touches a share 1 - (1 - k/E)^B of them (batch 1: k/E)."""
    if not spec.is_moe or not counts.expert_params:
        return weight_bytes
    expert_share = counts.expert_params / counts.total_params
    touched = 1 - (1 - spec.experts_per_token / spec.num_experts) ** batch_size
    return int(weight_bytes * (1 - expert_share) + weight_bytes * expert_share * touched)


def _replicas(
    choice: LayoutChoice, accelerator: Accelerator, speed: InferenceSpeed, setup: InferenceSetup, target: float | None
) -> Replicas:
    """Whole copies per GPU (each a process with its own CUDA context, as vLLM or llama.cpp servers run), per node,
    and how many a target request rate needs (worked example: an int8 7B, three copies per 24 GB RTX 4090)."""
    per_gpu = max(choice.usable_bytes // max(choice.memory.total_bytes, 1), 1)
    per_node = per_gpu * accelerator.gpus_per_node
    rate = replicas = gpus = None
    generated = setup.context_len - setup.prefill_tokens
    if speed.decode_tokens_per_second and speed.time_to_first_token_seconds is not None:
        # A request holds one of the batch's slots for its prefill and its generated tokens.
        seconds = speed.time_to_first_token_seconds / setup.batch_size + generated / speed.decode_tokens_per_second
        rate = setup.batch_size / seconds
    if target is not None and rate:
        replicas = math.ceil(target / rate)
        gpus = math.ceil(replicas / per_gpu)
    return Replicas(int(per_gpu), int(per_node), rate, target, replicas, gpus)


def _verdicts(
    search: LayoutSearch,
    request: LayoutRequest,
    headroom: float,
    *,
    time_on: Callable[[Accelerator, int, Layout], TrainingTime] | None = None,
    speed_on: Callable[[Accelerator, int], InferenceSpeed] | None = None,
) -> list[Verdict]:
    """The same job on every catalog GPU: the fewest that fit, with the user's fixed TP/PP/ZeRO kept."""
    open_request = replace(request, gpus=None)
    cards = list_accelerators()
    choices = search.best_for_each(cards, open_request, headroom=headroom)
    table = []
    for card in cards:
        choice = choices[card.name]
        if isinstance(choice, UserInputError):
            table.append(Verdict(card.name, card.memory_gib, None, "layout not possible", None, None, None, None))
            continue
        fits_requested = None
        if request.gpus is not None:
            fits_requested = choice.fits and choice.gpus <= request.gpus
        hours = cost = decode = None
        if choice.fits and time_on is not None:
            timing = time_on(card, choice.gpus, choice.layout)
            hours = None if timing.wall_seconds is None else timing.wall_seconds / 3600
            cost = timing.cost_usd
        if choice.fits and speed_on is not None:
            decode = speed_on(card, choice.layout.tp).decode_tokens_per_second
        table.append(
            Verdict(
                gpu=card.name,
                memory_gib=card.memory_gib,
                min_gpus=choice.gpus if choice.fits else None,
                layout=_short(choice.layout) if choice.fits else "does not fit",
                per_gpu_bytes=choice.memory.total_bytes if choice.fits else None,
                fits_requested=fits_requested,
                hours=hours,
                cost_usd=cost,
                decode_tokens_per_second=decode,
            )
        )
    return table


def _short(layout: Layout) -> str:
    text = f"DP{layout.dp}×TP{layout.tp}×PP{layout.pp}"
    if layout.ep > 1:
        text += f" EP{layout.ep}"
    if layout.zero_stage:
        text += f" ZeRO-{layout.zero_stage}"
    if layout.offload_optimizer or layout.offload_params:
        text += " offload"
    if layout.sequence_parallel:
        text += " SP"
    return text
