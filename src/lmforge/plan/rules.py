"""The rules of thumb that LLM-training tutorials teach, computed as they state them, for showing beside
the planner's precise figures with one line on why the two differ.

Each rule is a plain function of a parameter count and a few bytes-per-value figures, so the tests can
reproduce the tutorials' worked examples digit for digit (docs/plan.md, "Rules of thumb"). `source` names
the rule's basis (a paper where there is one), because that is what a user can look up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

GB = 1e9  # the rules are quoted in decimal GB


@dataclass(frozen=True)
class RuleOfThumb:
    name: str
    formula: str
    value: float  # in `unit`
    precise: float | None  # the planner's figure for the same quantity, in `unit` (None: nothing fits)
    unit: str  # "bytes" or "gpus"
    source: str
    why_they_differ: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gpus_needed_rule(params: float, vram_gb: float) -> int:
    """GPUs ≈ P(B) × 18 × 1.25 / VRAM(GB), rounded up (18 bytes/param of model states, 1.25 for
    activations; worked example: 7B on a 24 GB RTX 4090 -> 6.56 ≈ 7)."""
    return math.ceil(params / 1e9 * 18 * 1.25 / vram_gb)


def full_finetune_rule_bytes(params: float, bytes_per_param: float, activation_bytes: float = 0.0) -> float:
    """P × bytes × (1 + 2 + 2) + activations (weights, gradients + Adam, Adam moments; worked
    example: 7B fp16 -> 70 GB before activations)."""
    return params * bytes_per_param * (1 + 2 + 2) + activation_bytes


def model_states_rule_bytes(params: float) -> float:
    """(2 + 2 + 12) bytes per parameter: bf16 weights, bf16 gradients, fp32 Adam copy + moments
    (Rajbhandari et al. 2020, ZeRO §3.1: 7B -> 112e9 bytes ≈ 104 GiB)."""
    return params * (2 + 2 + 12)


def inference_rule_bytes(params: float, bytes_per_weight: float) -> float:
    """P × bytes per weight (worked example: 7B bf16 14 GB, int8 7 GB, int4 3.5 GB)."""
    return params * bytes_per_weight


def activation_formula_bytes(layers: int, heads: int, batch: int, seq: int, hidden: int, p: float) -> float:
    """L·b·s·h·p·[16 + 2/p + (a·s/h)(2 + 1/p)] (the tutorials' closed form; for p = 2 it is Korthikanti et al.
    2022's sbh(34 + 5as/h) per layer: a GPT block with eager attention, whose a·s² terms are the score matrices).
    The tutorial's expanded sum, 9bshp + bsh + 2abssp + abss + 2bshp, adds up to 11 + 1/p, not 16 + 2/p, per bshp:
    the closed form is the one that matches Korthikanti, so it is the one computed here."""
    return layers * batch * seq * hidden * p * (16 + 2 / p + (heads * seq / hidden) * (2 + 1 / p))


def decode_speed_rule(bandwidth_gb_s: float, model_bytes: float) -> float:
    """Tokens/s ≈ memory bandwidth / model size (worked example: "70B ... about 10 tokens/s")."""
    return bandwidth_gb_s * GB / model_bytes


def lora_rule_bytes(params: float, lora_params: float) -> float:
    """2P + 12 × LoRA params (a rule of thumb for LoRA, Hu et al. 2021: the frozen 16-bit base, and 12 bytes per
    adapter parameter for its fp32 weights, gradients and Adam moments)."""
    return 2 * params + 12 * lora_params


def _ratio_text(rule: float, precise: float) -> str:
    if precise <= 0:
        return "the planner has no comparable figure"
    ratio = rule / precise
    if abs(ratio - 1) < 0.02:
        return f"they agree ({ratio:.2f}x)"
    return f"rule is {ratio:.2f}x the precise figure"


def training_rules(
    *,
    params_total: int,
    params_trainable: int,
    method: str,
    precision: str,
    optimizer: str,
    half_bytes: float,
    vram_gb: float,
    precise_gpus: int | None,
    states_bytes_unsharded: float,
    activation_bytes: float,
    training_bytes_one_gpu: float,
    setup_text: str,
    shape: tuple[int, int, int, int, int] | None = None,
) -> list[RuleOfThumb]:
    """The training rules that apply to `method`, each beside the planner's own figure.

    `states_bytes_unsharded` is weights + master weights + gradients + optimizer states (+ adapter) on a
    single unsharded GPU; `training_bytes_one_gpu` the whole single-GPU peak, both from the memory model;
    `shape` is (layers, heads, micro-batch, sequence, hidden) for the tutorials' activation formula.
    """
    rules = [
        RuleOfThumb(
            name="GPUs to train",
            formula="ceil(P(B) × 18 × 1.25 / VRAM(GB))",
            value=gpus_needed_rule(params_total, vram_gb),
            precise=precise_gpus,
            unit="gpus",
            source="rule of thumb: 18 B/param of model states + 25% for activations",
            why_they_differ=(
                f"the rule assumes full training with 18 B/param and +25% for activations, all unsharded; "
                f"the planner counts {method} with {precision} + {optimizer}, real activations for {setup_text}, "
                "ZeRO/TP/PP sharding and 10% headroom"
            ),
        )
    ]
    if method == "full":
        per_param = states_bytes_unsharded / params_total
        rules.append(
            RuleOfThumb(
                name="Model states (2+2+12)",
                formula="P × (2 + 2 + 12) bytes",
                value=model_states_rule_bytes(params_total),
                precise=states_bytes_unsharded,
                unit="bytes",
                source="ZeRO (Rajbhandari et al. 2020) §3.1: mixed-precision Adam",
                why_they_differ=(
                    f"{_ratio_text(model_states_rule_bytes(params_total), states_bytes_unsharded)}: the planner uses "
                    f"{per_param:.1f} B/param for {precision} + {optimizer} (the rule: bf16 weights and grads, fp32 Adam)"
                ),
            )
        )
        rule = full_finetune_rule_bytes(params_total, half_bytes, activation_bytes)
        rules.append(
            RuleOfThumb(
                name="Full fine-tune",
                formula="P × bytes × (1 + 2 + 2) + activations",
                value=rule,
                precise=training_bytes_one_gpu,
                unit="bytes",
                source="rule of thumb: weights + gradients + Adam, 16-bit",
                why_they_differ=(
                    f"{_ratio_text(rule, training_bytes_one_gpu)}: the rule's 4 × 16-bit bytes for gradients and Adam "
                    f"undercount fp32 optimizer states; both use the planner's activations for {setup_text}"
                ),
            )
        )
    if shape is not None:
        layers, heads, batch, seq, hidden = shape
        rule = activation_formula_bytes(layers, heads, batch, seq, hidden, half_bytes)
        rules.append(
            RuleOfThumb(
                name="Activations",
                formula="L·b·s·h·p·[16 + 2/p + (a·s/h)(2 + 1/p)]",
                value=rule,
                precise=activation_bytes,
                unit="bytes",
                source="Korthikanti et al. 2022, activation memory of a GPT block",
                why_they_differ=(
                    f"{_ratio_text(rule, activation_bytes)}: the formula is Korthikanti et al.'s GPT block (4h GELU MLP, "
                    "eager attention keeping the s × s scores, no recomputation); the planner itemises this model's "
                    f"block (GQA, SwiGLU, norm upcasts, SDPA/flash without scores, recomputation, what {method} saves) "
                    f"for {setup_text}"
                ),
            )
        )
    if method in ("lora", "qlora"):
        rule = lora_rule_bytes(params_total, params_trainable)
        rules.append(
            RuleOfThumb(
                name="LoRA",
                formula="2 × P + 12 × LoRA params",
                value=rule,
                precise=training_bytes_one_gpu,
                unit="bytes",
                source="rule of thumb: 16-bit frozen base + 12 B per LoRA parameter",
                why_they_differ=(
                    f"{_ratio_text(rule, training_bytes_one_gpu)}: the rule leaves out activations for {setup_text}"
                    + (" and assumes a 16-bit base where QLoRA stores it in 4 bits" if method == "qlora" else "")
                    + "; the planner adds activations, buffers and CUDA overhead"
                ),
            )
        )
    return rules


def inference_rules(
    *,
    params_total: int,
    bytes_per_weight: float,
    weight_format: str,
    precise_weight_bytes: float,
    precise_total_bytes: float,
    kv_cache_bytes: float,
    bandwidth_gb_s: float | None = None,
    precise_decode_tokens_per_second: float | None = None,
    tp: int = 1,
) -> list[RuleOfThumb]:
    """The inference rules beside the planner's weights, its whole per-replica peak and its decode bound."""
    rule = inference_rule_bytes(params_total, bytes_per_weight)
    rules = [
        RuleOfThumb(
            name="Inference weights",
            formula=f"P × {bytes_per_weight:g} bytes ({weight_format})",
            value=rule,
            precise=precise_total_bytes,
            unit="bytes",
            source="rule of thumb: parameters × nominal bytes per weight",
            why_they_differ=(
                f"{_ratio_text(rule, precise_total_bytes)}: the rule counts nominal bits only; the planner's weights are "
                f"{precise_weight_bytes / GB:.2f} GB with quantisation scales, plus {kv_cache_bytes / GB:.2f} GB KV cache, "
                "activations and CUDA overhead"
            ),
        )
    ]
    if bandwidth_gb_s:
        speed = decode_speed_rule(bandwidth_gb_s, rule)
        rules.append(
            RuleOfThumb(
                name="Decode speed",
                formula="bandwidth / model size",
                value=speed,
                precise=precise_decode_tokens_per_second,
                unit="tokens/s",
                source="decoding is memory-bound: every weight read once per token",
                why_they_differ=(
                    f"the rule reads the nominal {rule / GB:.1f} GB once per token on one card's {bandwidth_gb_s:g} GB/s; "
                    f"the planner reads the real weight bytes (MoE: the experts the batch touches) plus the KV cache, "
                    f"on TP {tp} cards at once, and is never faster than the compute bound"
                ),
            )
        )
    return rules


# The rules' bytes per weight: the nominal width only, no quantisation scales.
NOMINAL_BYTES_PER_WEIGHT = {
    "fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "nf4": 0.5,
    "torchao-int8": 1.0, "torchao-int4": 0.5,
    "Q8_0": 1.0, "Q6_K": 0.75, "Q5_K_M": 0.625, "Q4_K_M": 0.5, "Q4_0": 0.5, "Q3_K_M": 0.375, "Q2_K": 0.25,
}  # fmt: skip
