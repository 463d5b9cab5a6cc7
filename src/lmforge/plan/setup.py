"""The planner's shared inputs and outputs: what is being run, how it is laid out, and what it costs in bytes.

`TrainingSetup` / `InferenceSetup` say what the user wants to run, `Layout` how it is spread over
GPUs, and `MemoryBreakdown` what one GPU then holds. They validate themselves at construction
(safetensors-style: check at the boundary, then trust), so the memory model never sees a zero
batch or an unknown optimizer.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

from lmforge.errors import UserInputError

# The fine-tuning methods, named once: the training config (lmforge.train.config.MethodSection) and the CLI read these.
Method = Literal["full", "freeze", "lora", "qlora", "prompt", "prefix"]
METHODS: tuple[str, ...] = typing.get_args(Method)
PRECISIONS = ("fp32", "fp16-mixed", "bf16-mixed", "bf16")  # "-mixed": fp32 master weights, half-precision compute
OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw-8bit", "sgd", "adafactor")
RECOMPUTE = ("none", "full", "selective")
# sdpa: torch's fused kernels; flash: flash-attn 2 (both keep q, k, v, the output and a log-sum-exp per head, never
# the s x s scores); eager: the plain matmul-softmax-matmul, which keeps the fp32 probabilities.
ATTENTION = ("sdpa", "flash", "eager")
# standard: full fp32 logits and cross-entropy (transformers); chunked: trl's chunked log-prob head (tiles of 4096
# tokens x 32768 vocabulary, recomputed in backward); fused: Liger's fused linear cross-entropy (CUDA only).
LOSSES = ("standard", "chunked", "fused")
QUANT_BITS = (4, 8)
WEIGHT_FORMATS = (
    "fp32", "fp16", "bf16", "fp8", "int8", "int4", "nf4", "torchao-int8", "torchao-int4",
    "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K",
)  # fmt: skip
KV_DTYPES = ("fp32", "fp16", "bf16", "fp8", "int8")
ZERO_STAGES = (0, 1, 2, 3)
SHARDING = ("zero", "fsdp")

# Fixed category keys of a MemoryBreakdown, in the order they are shown.
CATEGORIES = (
    "weights",
    "master_weights",
    "gradients",
    "optimizer_states",
    "adapter",
    "activations",
    "kv_cache",
    "buffers",
    "overhead",
)


def _check_choice(name: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise UserInputError(f"{name} {value!r} is not supported; choose one of: {shown}")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserInputError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class TrainingSetup:
    """One training step as the user configures it; everything the memory model needs besides the model.

    The method knobs carry the training config's names and defaults (method.lora_r, method.trainable_layers,
    train.grad_accum ...): lmforge.train.config.MethodSection takes its defaults from this class, so a plan
    and a run with nothing set mean the same thing.
    """

    method: str = "full"
    precision: str = "bf16-mixed"
    optimizer: str = "adamw"
    micro_batch_size: int = 1
    seq_len: int = 2048
    grad_accum: int = 1
    recompute: str = "none"
    attention: str = "sdpa"
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] | None = None  # None = the model's default targets (all linear layers)
    trainable_layers: int = 2  # method "freeze": how many of the last layers train (plus the head)
    quant_bits: int = 4  # qlora: 4 (NF4) or 8 bits
    double_quant: bool = True
    num_virtual_tokens: int = 16  # prompt / prefix tuning
    loss: str = "standard"  # see LOSSES
    offload_activations: bool = False  # saved activations to CPU RAM (torchtune's OffloadActivations)
    optimizer_in_backward: bool = False  # each parameter steps as its gradient arrives (torchtune optimizer_in_bwd)

    def __post_init__(self) -> None:
        _check_choice("method", self.method, METHODS)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("recompute", self.recompute, RECOMPUTE)
        _check_choice("attention", self.attention, ATTENTION)
        _check_choice("quant_bits", self.quant_bits, QUANT_BITS)
        for name in ("micro_batch_size", "seq_len", "grad_accum", "lora_r", "num_virtual_tokens"):
            _check_positive(name, getattr(self, name))
        _check_positive("trainable_layers", self.trainable_layers)
        if self.lora_alpha <= 0:
            raise UserInputError(f"lora_alpha must be positive, got {self.lora_alpha!r}")
        if self.optimizer_in_backward and self.grad_accum > 1:
            # torchtune refuses the same: a parameter steps as soon as its gradient exists, so nothing can accumulate.
            raise UserInputError(
                f"optimizer_in_backward steps each parameter during backward, so gradients cannot accumulate over "
                f"{self.grad_accum} micro-batches; use grad_accum 1"
            )
        if self.target_modules is not None:
            if isinstance(self.target_modules, str) or not self.target_modules:
                raise UserInputError("target_modules must be a non-empty list of module names, or None for the default")
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch_size * self.seq_len


@dataclass(frozen=True)
class InferenceSetup:
    """Serving one model: how its weights are stored, how its KV cache is kept, and how much context."""

    weight_format: str = "bf16"
    kv_dtype: str = "bf16"
    batch_size: int = 1
    context_len: int = 4096  # prompt + generated tokens, per sequence
    prompt_len: int | None = None  # tokens prefilled at once; None = the whole context

    def __post_init__(self) -> None:
        # GGUF names are matched case-insensitively ("q4_k_m" is what users type).
        canonical = {f.lower(): f for f in WEIGHT_FORMATS}
        if isinstance(self.weight_format, str) and self.weight_format.lower() in canonical:
            object.__setattr__(self, "weight_format", canonical[self.weight_format.lower()])
        _check_choice("weight_format", self.weight_format, WEIGHT_FORMATS)
        _check_choice("kv_dtype", self.kv_dtype, KV_DTYPES)
        _check_positive("batch_size", self.batch_size)
        _check_positive("context_len", self.context_len)
        if self.prompt_len is not None:
            _check_positive("prompt_len", self.prompt_len)
            if self.prompt_len > self.context_len:
                raise UserInputError(
                    f"prompt_len {self.prompt_len} exceeds context_len {self.context_len}; "
                    "context_len counts prompt plus generated tokens"
                )

    @property
    def prefill_tokens(self) -> int:
        return self.prompt_len if self.prompt_len is not None else self.context_len


@dataclass(frozen=True)
class Layout:
    """How one job is spread over GPUs: data x tensor x pipeline parallel, plus ZeRO/FSDP sharding and offload."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    ep: int = 1  # expert parallel: the routed experts are split over ep of the dp ranks (MoE only)
    zero_stage: int = 0
    sharding: str = "zero"  # "fsdp": FULL_SHARD behaves as ZeRO-3, SHARD_GRAD_OP as ZeRO-2
    offload_optimizer: bool = False
    offload_params: bool = False
    sequence_parallel: bool = False

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp", "ep"):
            _check_positive(name, getattr(self, name))
        if self.dp % self.ep:
            raise UserInputError(f"expert parallel degree {self.ep} must divide the {self.dp} data-parallel ranks")
        _check_choice("zero_stage", self.zero_stage, ZERO_STAGES)
        _check_choice("sharding", self.sharding, SHARDING)
        if self.offload_params and self.zero_stage < 3:
            raise UserInputError(
                f"offload_params needs ZeRO stage 3 (parameters sharded), got zero_stage {self.zero_stage}"
            )
        if self.sequence_parallel and self.tp == 1:
            raise UserInputError("sequence_parallel splits activations across tensor-parallel ranks; it needs tp > 1")

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp


@dataclass
class MemoryBreakdown:
    """Bytes one GPU holds at its peak, by category (fixed keys, see CATEGORIES), plus what lives in CPU RAM."""

    bytes_by_category: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    cpu_offload_bytes: int = 0
    # Training: "forward-backward" (start of backward: all activations, no gradients yet) or
    # "optimizer-step" (all gradients, no activations), whichever is larger; "inference" when serving.
    peak_phase: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.bytes_by_category) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown memory categories {sorted(unknown)}; allowed: {CATEGORIES}")
        self.bytes_by_category = {c: int(self.bytes_by_category.get(c, 0)) for c in CATEGORIES}

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_category.values())

    def __getitem__(self, category: str) -> int:
        return self.bytes_by_category[category]

    def to_dict(self) -> dict[str, object]:
        return {
            "total_bytes": self.total_bytes,
            "breakdown": dict(self.bytes_by_category),
            "cpu_offload_bytes": self.cpu_offload_bytes,
            "peak_phase": self.peak_phase,
        }
