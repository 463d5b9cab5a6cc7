"""The planner's view of a run, asked before the model loads: plan.json and auto_fit.

plan.json keeps the planner's prediction (trainable/total params, per-GPU memory) next to what the
run measured, so every real run checks the planner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError, UserInputError
from lmforge.train.config import TrainConfig
from lmforge.train.context import resolved_precision
from lmforge.train.loading import resolve_model_folder, trusted, weights_dtype
from lmforge.train.methods import lora_targets

_PRECISION = {"fp32": "fp32", "bf16": "bf16-mixed", "fp16": "fp16-mixed"}


@dataclass(frozen=True)
class FitChoice:
    micro_batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    planned_peak_bytes: int


def hf_config(config: TrainConfig, tokenizer: Any) -> Any:
    """The transformers config of the starting model, read without loading any weights."""
    from transformers import AutoConfig

    from lmforge.hub.reference import ModelRef, locate_base

    source = config.init_from or config.model.path
    if source is None:
        raw = dict(config.model.config or {})
        result = AutoConfig.for_model(raw.pop("model_type"), **raw)
        result.vocab_size = len(tokenizer)
        return result
    folder = resolve_model_folder(source, **trusted(config))
    if not (folder / "config.json").is_file():  # an adapter: the architecture is its base model's
        folder = locate_base(ModelRef(source, "adapter", folder), **trusted(config)).path
    return AutoConfig.from_pretrained(folder, trust_remote_code=config.model.trust_remote_code)


def _planner_kwargs(config: TrainConfig, model_config: Any) -> dict[str, Any]:
    method = config.method
    targets = lora_targets(model_config.to_dict(), method)
    precision: str = config.train.precision
    if precision == "auto":
        # Planned for the machine it runs on; a CPU planning for train.target_gpu plans that GPU's bf16.
        import torch

        cuda = torch.cuda.is_available()
        precision = resolved_precision(precision) if cuda or not config.train.target_gpu else "bf16"
    planned_precision = _PRECISION[precision]
    if method.name in ("full", "freeze") and weights_dtype(config) == "bfloat16" and precision == "bf16":
        planned_precision = "bf16"  # bf16 weights trained directly: no fp32 copy anywhere
    return {
        "method": method.name,
        "precision": planned_precision,
        "seq_len": config.data.max_len,
        "lora_r": method.lora_r,
        "lora_alpha": method.lora_alpha,
        "target_modules": targets if isinstance(targets, list) else None,
        "trainable_layers": method.trainable_layers,
        "quant_bits": method.quant_bits,
        "num_virtual_tokens": method.num_virtual_tokens,
        "loss": config.train.loss,
        "offload_activations": config.train.offload_activations,
        "gpu": config.train.target_gpu,
        "verdicts": False,
        "levers": False,  # the plan of this very run: nothing it does not do
    }


def _spec(config: TrainConfig, model_config: Any, num_labels: int | None) -> Any:
    """The planner's ModelSpec of what this run trains: a reward model or classifier (stages rm, classify)
    has a score head of `num_labels` outputs in place of the LM head, and no vocabulary-sized logits."""
    from lmforge.plan.models import as_sequence_classifier, spec_from_config
    from lmforge.train.context import stage_module

    spec = spec_from_config(model_config.to_dict(), name=config.model.path or config.init_from or "scratch")
    if stage_module(config.stage).TASK == "classify":
        spec = as_sequence_classifier(spec, num_labels or 2)
    return spec


def plan_config(path: str | Path, *, gpu: str | None = None, gpus: int | None = None, **options: Any) -> Any:
    """The planner's Plan for exactly what `lmforge train PATH` will run (`lmforge plan --from-config`): the
    config's model, method, precision, batch, accumulation, recomputation and loss, on `gpu` (else
    train.target_gpu); `gpus` fixes the data-parallel size (default: the fewest that fit). `options` are
    plan_training's layout and cost keywords (zero, offload, tokens, mfu, price_per_gpu_hour, headroom, simulate)."""
    from lmforge.plan.planner import plan_training
    from lmforge.train.config import load_config

    config = load_config(path)
    if gpu is not None:
        config = config.model_copy(update={"train": config.train.model_copy(update={"target_gpu": gpu})})
    model_config = hf_config(config, _PlannedVocabulary(config))
    spec = _spec(config, model_config, None)
    kwargs = {**_planner_kwargs(config, model_config), "verdicts": True}
    return plan_training(
        spec,
        micro_batch_size=config.train.micro_batch_size,
        grad_accum=config.train.grad_accum,
        recompute="full" if config.train.gradient_checkpointing else "none",
        gpus=gpus,
        tp=1,
        pp=1,
        ep=1,
        **kwargs,
        **options,
    )


class _PlannedVocabulary:
    """len() of the tokenizer a from-scratch run will use, without training it: bpe:N trains N tokens, a
    tokenizer folder has its own length."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def __len__(self) -> int:
        spec = self.config.model.tokenizer or ""
        if spec.startswith("bpe:"):
            return int(spec[4:])
        from transformers import AutoTokenizer

        return len(AutoTokenizer.from_pretrained(spec))


def plan_run(
    config: TrainConfig, model_config: Any, world_size: int = 1, *, num_labels: int | None = None
) -> dict[str, Any]:
    """plan_training for exactly this run (micro-batch, accumulation, recompute, data-parallel size)."""
    from lmforge.plan.planner import plan_training

    try:
        spec = _spec(config, model_config, num_labels)
        plan = plan_training(
            spec,
            micro_batch_size=config.train.micro_batch_size,
            grad_accum=config.train.grad_accum,
            recompute="full" if config.train.gradient_checkpointing else "none",
            gpus=world_size,
            tp=1,
            pp=1,
            ep=1,
            **_planner_kwargs(config, model_config),
        )
    except LmforgeError as error:
        return {"error": str(error)}
    return plan.to_dict()


def auto_fit(
    config: TrainConfig, model_config: Any, world_size: int = 1, *, num_labels: int | None = None
) -> FitChoice:
    """The largest micro-batch (power of two dividing the per-process batch) that fits train.target_gpu,
    without recomputation if any fits, else with full recomputation; accumulation makes up the rest."""
    from lmforge.plan.planner import plan_training

    train = config.train
    wanted = train.global_batch_size or train.micro_batch_size * train.grad_accum * world_size
    if wanted % world_size:
        raise UserInputError(f"train.global_batch_size {wanted} is not divisible by {world_size} processes")
    per_process = wanted // world_size
    sizes = [2**i for i in range(per_process.bit_length(), -1, -1) if per_process % 2**i == 0]
    spec = _spec(config, model_config, num_labels)
    kwargs = _planner_kwargs(config, model_config)
    for recompute in ("none", "full"):
        for size in sizes:
            plan = plan_training(
                spec,
                micro_batch_size=size,
                grad_accum=per_process // size,
                recompute=recompute,
                gpus=world_size,
                tp=1,
                pp=1,
                ep=1,
                **kwargs,
            )
            if plan.fits:
                return FitChoice(size, per_process // size, recompute == "full", plan.memory.total_bytes)
    raise UserInputError(
        f"auto_fit: even micro-batch 1 with recomputation does not fit {train.target_gpu}; "
        "use lora/qlora, a shorter data.max_len, or more GPUs (lmforge plan shows the options)"
    )
