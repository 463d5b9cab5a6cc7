"""The planner API: one call answers "will it fit, on how many GPUs, laid out how, how long, how much".

`plan_training(...)` and `plan_inference(...)` resolve the model, count its parameters, search the
layout on the chosen GPU (memory model per candidate), add time and cost, the seeds' rules of thumb
beside the precise figures, and a verdict for every GPU type in the catalog. `Plan.to_dict()` is the
stable JSON the CLI prints with --json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lmforge.errors import UserInputError
from lmforge.plan.hardware import GIB, Accelerator, custom_accelerator, get_accelerator, list_accelerators
from lmforge.plan.layout import DEFAULT_HEADROOM, LayoutChoice, LayoutRequest, LayoutSearch
from lmforge.plan.memory import model_states_bytes
from lmforge.plan.models import resolve_model
from lmforge.plan.params import ParamCount, count_params, count_trainable_params, default_lora_targets
from lmforge.plan.rules import NOMINAL_BYTES_PER_WEIGHT, RuleOfThumb, inference_rules, training_rules
from lmforge.plan.setup import InferenceSetup, Layout, MemoryBreakdown, TrainingSetup
from lmforge.plan.spec import ModelSpec
from lmforge.plan.throughput import InferenceSpeed, TrainingTime, inference_speed, matmul_params, training_time

DEFAULT_GPU = "a100-80g"
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
        priced = [v for v in self.verdicts if v.cost_usd is not None]
        return min(priced, key=lambda v: v.cost_usd) if priced else None

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
                "zero_stage": layout.zero_stage,
                "offload_optimizer": layout.offload_optimizer,
                "offload_params": layout.offload_params,
                "sequence_parallel": layout.sequence_parallel,
                "fits": self.choice.fits,
                "reason": self.choice.reason,
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


def plan_training(
    model: str | ModelSpec,
    *,
    method: str = "full",
    precision: str = "bf16-mixed",
    optimizer: str = "adamw",
    micro_batch_size: int = 1,
    seq_len: int = 2048,
    grad_accum: int = 1,
    recompute: str = "none",
    attention: str = "sdpa",
    lora_rank: int = 16,
    lora_alpha: int = 32,
    lora_targets: list[str] | None = None,
    freeze_last_n: int = 1,
    qlora_bits: int = 4,
    num_virtual_tokens: int = 20,
    zero: int | None = None,
    offload: str = "none",
    tp: int | None = None,
    pp: int | None = None,
    gpu: str | None = None,
    gpus: int | None = None,
    gpu_mem_gib: float | None = None,
    tokens: int | None = None,
    mfu: float = 0.40,
    price_per_gpu_hour: float | None = None,
    headroom: float = DEFAULT_HEADROOM,
    verdicts: bool = True,
    simulate: bool = False,
) -> Plan:
    """Plan a training (or fine-tuning) run: per-GPU memory, GPU count and layout, time and cost.

    None for zero / tp / pp / gpus lets the layout search choose; a given value is honoured and
    validated. `tokens` defaults to one billion (time and cost are then per billion tokens).
    """
    tokens_given = tokens is not None
    tokens = DEFAULT_TRAINING_TOKENS if tokens is None else tokens
    if tokens <= 0:
        raise UserInputError(f"--tokens must be positive, got {tokens}")
    if price_per_gpu_hour is not None and price_per_gpu_hour < 0:
        raise UserInputError(f"--price must be a non-negative $ per GPU-hour, got {price_per_gpu_hour}")
    spec = _resolve(model)
    if method in ("lora", "qlora") and not lora_targets:
        # Resolved once here: the plan records which modules LoRA wraps, and the memory model
        # prices hundreds of layouts without re-deriving the default targets each time.
        lora_targets = default_lora_targets(spec)
    setup = TrainingSetup(
        method=method,
        precision=precision,
        optimizer=optimizer,
        micro_batch_size=micro_batch_size,
        seq_len=seq_len,
        grad_accum_steps=grad_accum,
        recompute=recompute,
        attention=attention,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_targets=tuple(lora_targets) if lora_targets else None,
        freeze_last_n=freeze_last_n,
        qlora_bits=qlora_bits,
        num_virtual_tokens=num_virtual_tokens,
    )
    accelerator = _accelerator(gpu, gpu_mem_gib)
    trainable = count_trainable_params(
        spec,
        method,
        lora_rank=lora_rank,
        lora_targets=list(lora_targets) if lora_targets else None,
        freeze_last_n=freeze_last_n,
        num_virtual_tokens=num_virtual_tokens,
    )
    summary, counts = _summary(spec, trainable)
    request = LayoutRequest(gpus=gpus, tp=tp, pp=pp, zero_stage=zero, offload=offload)
    search = LayoutSearch(spec, setup, counts.total_params)
    choice = search.best(accelerator, request, headroom=headroom)
    compute = matmul_params(spec, counts.active_params, counts.by_component["embeddings"])

    def time_on(card: Accelerator, n_gpus: int, dp: int) -> TrainingTime:
        # --price is what the user pays for their card; other cards in the verdict table keep catalog prices.
        price = price_per_gpu_hour if price_per_gpu_hour is not None and card is accelerator else card.price_usd_per_hour
        return training_time(
            spec,
            compute_params=compute,
            trainable_params=trainable,
            method=method,
            freeze_last_n=freeze_last_n,
            seq_len=seq_len,
            recompute=recompute,
            tokens=tokens,
            tokens_per_step=micro_batch_size * seq_len * grad_accum * dp,
            gpus=n_gpus,
            peak_flops_per_gpu=card.peak_flops_per_second(precision),
            mfu=mfu,
            price_usd_per_gpu_hour=price,
        )

    throughput = time_on(accelerator, choice.gpus, choice.layout.dp)
    fewest = choice if gpus is None else search.best(accelerator, replace(request, gpus=None), headroom=headroom)
    one_gpu = search.memory(Layout())
    half_bytes = 4.0 if precision == "fp32" else 2.0
    rules = training_rules(
        params_total=counts.total_params,
        params_trainable=trainable,
        method=method,
        precision=precision,
        optimizer=optimizer,
        half_bytes=half_bytes,
        vram_gb=accelerator.memory_gib,
        precise_gpus=fewest.gpus if fewest.fits else None,
        states_bytes_unsharded=model_states_bytes(spec, setup, Layout()),
        activation_bytes=one_gpu["activations"],
        training_bytes_one_gpu=one_gpu.total_bytes,
        setup_text=f"micro-batch {micro_batch_size} × {seq_len} tokens",
    )
    table = _verdicts(search, request, headroom, time_on=time_on) if verdicts else []
    plan = Plan("train", summary, setup, accelerator, choice, throughput, rules, table)
    if not tokens_given:
        plan.notes.append("time and cost are for 1e9 training tokens; pass --tokens for your dataset")
    if recompute != "full" and (choice.gpus > 1 or not choice.fits):
        hint = _recompute_hint(spec, setup, counts.total_params, accelerator, request, headroom, choice)
        if hint:
            plan.notes.append(hint)
    if simulate:
        from lmforge.plan.simulate import simulate_training

        plan.simulation = simulate_training(spec, setup).to_dict()
    return plan


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
    recomputed = LayoutSearch(spec, replace(setup, recompute="full"), params_total).best(accelerator, request, headroom=headroom)
    if not recomputed.fits:
        return None
    if not choice.fits:
        return f"with --grad-ckpt full it fits: {recomputed.memory.total_bytes / GIB:.1f} GiB per GPU"
    if recomputed.gpus < choice.gpus:
        return f"with --grad-ckpt full it needs {recomputed.gpus} GPUs instead of {choice.gpus} (one more forward: ~1/3 more compute)"
    return None


def plan_inference(
    model: str | ModelSpec,
    *,
    weight_format: str = "bf16",
    kv_dtype: str = "bf16",
    batch_size: int = 1,
    context_len: int = 4096,
    prompt_len: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    gpu: str | None = None,
    gpus: int | None = None,
    gpu_mem_gib: float | None = None,
    mfu: float = 0.40,
    headroom: float = DEFAULT_HEADROOM,
    verdicts: bool = True,
) -> Plan:
    """Plan serving: per-GPU memory (weights, KV cache, activations), GPUs and TP/PP, decode and prefill speed."""
    spec = _resolve(model)
    setup = InferenceSetup(
        weight_format=weight_format, kv_dtype=kv_dtype, batch_size=batch_size, context_len=context_len, prompt_len=prompt_len
    )
    accelerator = _accelerator(gpu, gpu_mem_gib)
    summary, counts = _summary(spec, 0)
    request = LayoutRequest(gpus=gpus, tp=tp, pp=pp)
    search = LayoutSearch(spec, setup, counts.total_params)
    choice = search.best(accelerator, request, headroom=headroom)
    one_gpu = search.memory(Layout())
    # Decode streams only the weights a token uses: MoE reads its active experts (batch-1 bound).
    weights_read = int(one_gpu["weights"] * counts.active_params / counts.total_params)

    def speed_on(card: Accelerator, tp: int) -> InferenceSpeed:
        return inference_speed(
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

    throughput = speed_on(accelerator, choice.layout.tp)
    rules = inference_rules(
        params_total=counts.total_params,
        bytes_per_weight=NOMINAL_BYTES_PER_WEIGHT[setup.weight_format],
        weight_format=setup.weight_format,
        precise_weight_bytes=one_gpu["weights"],
        precise_total_bytes=one_gpu.total_bytes,
        kv_cache_bytes=one_gpu["kv_cache"],
    )
    table = _verdicts(search, request, headroom, speed_on=speed_on) if verdicts else []
    return Plan("infer", summary, setup, accelerator, choice, throughput, rules, table)


def _verdicts(
    search: LayoutSearch,
    request: LayoutRequest,
    headroom: float,
    *,
    time_on: Callable[[Accelerator, int, int], TrainingTime] | None = None,
    speed_on: Callable[[Accelerator, int], InferenceSpeed] | None = None,
) -> list[Verdict]:
    """The same job on every catalog GPU: the fewest that fit, with the user's fixed TP/PP/ZeRO kept."""
    open_request = LayoutRequest(tp=request.tp, pp=request.pp, zero_stage=request.zero_stage, offload=request.offload)
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
            timing = time_on(card, choice.gpus, choice.layout.dp)
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
    if layout.zero_stage:
        text += f" ZeRO-{layout.zero_stage}"
    if layout.offload_optimizer or layout.offload_params:
        text += " offload"
    if layout.sequence_parallel:
        text += " SP"
    return text
