"""Time and cost: FLOPs for training, and the memory-bandwidth and compute bounds for inference.

Training time = FLOPs executed / (GPUs x dense peak x utilisation). Decode speed is bounded by how
fast a GPU can stream the bytes one step must read (weights plus KV cache); prefill by compute.
Everything here is arithmetic on counts the other planner modules produce, so it is easy to check
by hand (the tests do exactly that).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lmforge.errors import UserInputError
from lmforge.plan.spec import ModelSpec

# Methods whose gradients must flow back through every layer although few weights train.
_BACKPROP_EVERYWHERE = {"lora", "qlora", "prompt", "prefix"}


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise UserInputError(f"{name} must be in (0, 1], got {value}")


def matmul_params(spec: ModelSpec, active_params: int, embedding_params: int) -> int:
    """Parameters that take part in a matmul per token: the active ones minus the input embedding,
    which is a table lookup (Kaplan et al. 2020 §2.1 leave embeddings out of N); a tied embedding
    still does the LM-head matmul, so its vocab x hidden block stays in."""
    head = spec.vocab_size * spec.hidden_size if spec.tie_word_embeddings else 0
    return max(active_params - embedding_params + head, 0)


def attention_flops_per_token(spec: ModelSpec, context_tokens: int) -> float:
    """Forward FLOPs of the score and value matmuls for one token attending to `context_tokens`:
    2·s·H·(d_qk + d_v) per layer, which is PaLM's 4·L·H·Q·T with d_qk = d_v = Q (Chowdhery et al.
    2022, Appendix B; causal masking ignored, so this is the upper figure PaLM uses)."""
    if spec.is_mla:
        qk_dim, v_dim = spec.qk_nope_head_dim + spec.qk_rope_head_dim, spec.v_head_dim
    else:
        qk_dim = v_dim = spec.head_dim
    layers = spec.num_layers + spec.num_encoder_layers
    return 2.0 * context_tokens * spec.num_attention_heads * (qk_dim + v_dim) * layers


@dataclass(frozen=True)
class TrainingTime:
    tokens: int
    tokens_per_step: int  # micro-batch × sequence × grad-accum × data-parallel ranks
    flops_per_token: float  # executed, recomputation included
    model_flops: float  # 6·N·D-style useful work, no recomputation (what MFU is quoted against)
    recompute_flops: float
    total_flops: float  # model_flops + recompute_flops
    gpus: int
    peak_flops_per_gpu: float | None
    mfu: float
    wall_seconds: float | None
    gpu_hours: float | None
    price_usd_per_gpu_hour: float | None
    cost_usd: float | None
    tokens_per_second: float | None
    step_seconds: float | None  # one optimizer step of `tokens_per_step` tokens
    pipeline_bubble: float = 0.0  # share of each step a 1F1B pipeline stands idle, (p - 1) / (m + p - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_time(
    spec: ModelSpec,
    *,
    compute_params: int,
    trainable_params: int,
    method: str,
    trainable_layers: int,
    seq_len: int,
    recompute: str,
    tokens: int,
    tokens_per_step: int,
    gpus: int,
    peak_flops_per_gpu: float | None,
    mfu: float = 0.40,
    price_usd_per_gpu_hour: float | None = None,
    pp: int = 1,
    micro_batches: int = 1,
    loss: str = "standard",
) -> TrainingTime:
    """FLOPs and wall time to train on `tokens` tokens.

    Per token: forward 2·N plus attention; backward is 2·N for the activation gradients through every
    layer gradients pass, plus 2·N_trainable for weight gradients (6·N·D for full training, Kaplan et al.
    2020 §2.1), and twice the forward attention. Full recomputation repeats the forward (8·N·D in
    total); selective repeats only the attention core (Korthikanti et al. 2022 §5). trl's chunked loss
    recomputes the head's logits in backward (2·V·h more per token). A pipeline of `pp` stages fed
    `micro_batches` per step idles (p - 1) / (m + p - 1) of it (1F1B, Narayanan et al. 2021 §2.2), so the
    wall time is the busy time / (1 - bubble).
    """
    if tokens <= 0:
        raise UserInputError(f"tokens must be positive, got {tokens}")
    if gpus <= 0:
        raise UserInputError(f"gpus must be positive, got {gpus}")
    _check_fraction("mfu", mfu)
    attention_forward = attention_flops_per_token(spec, seq_len)
    forward = 2.0 * compute_params + attention_forward
    if method == "full":
        backward = 4.0 * compute_params + 2.0 * attention_forward
    elif method in _BACKPROP_EVERYWHERE:
        backward = 2.0 * compute_params + 2.0 * trainable_params + 2.0 * attention_forward
    else:  # freeze: gradients stop below the last trainable layers (+ head)
        share = min(trainable_layers / spec.num_layers, 1.0)
        backward = 2.0 * compute_params * share + 2.0 * trainable_params + 2.0 * attention_forward * share
    recompute_per_token = {"none": 0.0, "full": forward, "selective": attention_forward}[recompute]
    if loss == "chunked":
        recompute_per_token += 2.0 * spec.vocab_size * spec.hidden_size
    model_flops = (forward + backward) * tokens
    recompute_flops = recompute_per_token * tokens
    total = model_flops + recompute_flops
    bubble = (pp - 1) / (micro_batches + pp - 1)
    wall = gpu_hours = cost = rate = step = None
    if peak_flops_per_gpu:
        wall = total / (gpus * peak_flops_per_gpu * mfu) / (1 - bubble)
        step = wall * tokens_per_step / tokens
        gpu_hours = wall * gpus / 3600.0
        rate = tokens / wall
        if price_usd_per_gpu_hour is not None:
            cost = gpu_hours * price_usd_per_gpu_hour
    return TrainingTime(
        tokens=tokens,
        tokens_per_step=tokens_per_step,
        flops_per_token=forward + backward + recompute_per_token,
        model_flops=model_flops,
        recompute_flops=recompute_flops,
        total_flops=total,
        gpus=gpus,
        peak_flops_per_gpu=peak_flops_per_gpu,
        mfu=mfu,
        wall_seconds=wall,
        gpu_hours=gpu_hours,
        price_usd_per_gpu_hour=price_usd_per_gpu_hour,
        cost_usd=cost,
        tokens_per_second=rate,
        step_seconds=step,
        pipeline_bubble=bubble,
    )


@dataclass(frozen=True)
class InferenceSpeed:
    bytes_read_per_step: int  # weights read once per decode step + every sequence's KV cache
    decode_tokens_per_second: float | None  # per sequence, upper bound
    decode_tokens_per_second_total: float | None  # all sequences of the batch together
    decode_bound: str | None  # "bandwidth" or "compute": which limit sets the decode speed
    decode_flops_per_step: float
    prefill_flops: float
    prefill_seconds: float | None
    time_to_first_token_seconds: float | None
    mfu: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inference_speed(
    spec: ModelSpec,
    *,
    weight_bytes_read: int,
    kv_cache_bytes: int,
    compute_params: int,
    batch_size: int,
    prompt_tokens: int,
    tp: int,
    bandwidth_bytes_per_second: float | None,
    peak_flops_per_gpu: float | None,
    mfu: float = 0.40,
) -> InferenceSpeed:
    """Upper bounds for serving.

    Decode reads every weight it uses (active parameters for MoE) once per step and every sequence's KV
    cache, so a step takes at least bytes / (TP x bandwidth) (the rule of thumb: token speed ≈ bandwidth /
    model size); it also computes 2·N plus attention over the context for every sequence of the batch, so it takes
    at least FLOPs / (TP x peak x MFU): the step time is the larger (a roofline; large batches turn decode
    compute-bound). Tensor-parallel ranks stream and compute their shards at the same time; pipeline stages
    take turns, so PP adds neither. Prefill is compute-bound: 2·N per prompt token plus attention, at the MFU
    assumption; the first token cannot come before the weights have been read once either.
    """
    _check_fraction("mfu", mfu)
    step_bytes = weight_bytes_read + kv_cache_bytes
    context = max(prompt_tokens, 1)
    step_flops = batch_size * (2.0 * compute_params + attention_flops_per_token(spec, context))
    per_sequence = total_rate = bound = None
    if bandwidth_bytes_per_second:
        step_seconds = step_bytes / (tp * bandwidth_bytes_per_second)
        bound = "bandwidth"
        if peak_flops_per_gpu:
            compute_seconds = step_flops / (tp * peak_flops_per_gpu * mfu)
            if compute_seconds > step_seconds:
                step_seconds, bound = compute_seconds, "compute"
        per_sequence = 1.0 / step_seconds
        total_rate = batch_size / step_seconds
    # Forward only: 2·N per token plus attention over the prompt (Chowdhery et al. 2022, App. B).
    prefill_flops = batch_size * prompt_tokens * (2.0 * compute_params + attention_flops_per_token(spec, prompt_tokens))
    prefill = ttft = None
    if peak_flops_per_gpu:
        prefill = prefill_flops / (tp * peak_flops_per_gpu * mfu)
        ttft = prefill
        if bandwidth_bytes_per_second:
            ttft = max(prefill, weight_bytes_read / (tp * bandwidth_bytes_per_second))
    return InferenceSpeed(
        bytes_read_per_step=step_bytes,
        decode_tokens_per_second=per_sequence,
        decode_tokens_per_second_total=total_rate,
        decode_bound=bound,
        decode_flops_per_step=step_flops,
        prefill_flops=prefill_flops,
        prefill_seconds=prefill,
        time_to_first_token_seconds=ttft,
        mfu=mfu,
    )
