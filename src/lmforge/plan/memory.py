"""How many bytes one GPU holds at its peak, for a training step or for serving, by category.

`training_memory(spec, setup, layout)` and `inference_memory(spec, setup, layout)` return a
MemoryBreakdown for the most loaded GPU. The layout search calls them for every candidate layout,
so they are pure arithmetic on the spec (no torch).

Training has two peaks and the larger one wins (`peak_phase`):
  forward-backward: at the start of backward every saved activation is alive, the loss's fp32
      vocabulary tensors are at their largest and no gradient exists yet (except the head's);
  backward-end / optimizer-step: activations are gone and every gradient exists (a tied
      embedding briefly holds two more gradient-sized copies while its two parts are summed).
Backward frees activations layer by layer while it creates gradients layer by layer, so the memory
in between lies on the line between these two ends.

Activations are counted the way Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models", §4) count them - every tensor autograd saves, in bytes per token - but
for what the Hugging Face Llama-family modules really save (RMSNorm upcasts to fp32, SwiGLU with
its intermediate size, GQA-sized keys and values, rotary, SDPA without the s x s matrix, AMP's
bf16 casts), checked op by op against the fake-tensor simulation (plan/simulate.py,
benchmarks/plan_accuracy.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from lmforge.plan.models import moe_layer_indices
from lmforge.plan.params import ParamCount, count_params, count_trainable_params, num_labels
from lmforge.plan.quant import nf4_bits_per_weight, weight_format
from lmforge.plan.setup import CATEGORIES, InferenceSetup, Layout, MemoryBreakdown, TrainingSetup
from lmforge.plan.spec import ModelSpec

# What a training process holds outside PyTorch's caching allocator (CUDA context, kernels, cuBLAS/cuDNN
# workspaces): measured as NVML's process total minus torch.cuda.max_memory_reserved, 0.74-0.75 GiB in all five
# runs of docs/gpu.md (H200, driver 580, CUDA 13.0, torch 2.11); an assumption on other stacks.
CUDA_CONTEXT_BYTES = 768 * 2**20
# PyTorch's caching allocator rounds blocks and fragments: reserved memory runs above allocated memory. In
# docs/gpu.md max_memory_reserved was 3-15 % above max_memory_allocated without recomputation (median 5 %) and
# 21-24 % with full recomputation, whose re-run blocks fragment the cache; an assumption beyond those runs.
ALLOCATOR_SLACK = 0.05
ALLOCATOR_SLACK_RECOMPUTE = 0.22

_HALF = 2
_FP32 = 4
_KV_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}
_LAYER_NORM = {"gpt2"}  # LayerNorm without the RMSNorm fp32 upcast
_QK_NORM = {"qwen3", "qwen3_moe", "gemma3_text"}
_NON_GATED_MLP = {"gpt2", "bert", "roberta", "t5", "mt5", "umt5"}


@lru_cache(maxsize=64)
def _counts(spec: ModelSpec) -> ParamCount:
    # The layout search prices dozens of layouts of one spec; count its weights once.
    return count_params(spec)


@lru_cache(maxsize=64)
def _adapter_params(
    spec: ModelSpec, method: str, rank: int, targets: tuple[str, ...] | None, freeze_last_n: int, virtual_tokens: int
) -> int:
    return count_trainable_params(
        spec,
        "lora" if method == "qlora" else method,
        lora_rank=rank,
        lora_targets=list(targets) if targets else None,
        freeze_last_n=freeze_last_n,
        num_virtual_tokens=virtual_tokens,
    )


@dataclass(frozen=True)
class _Stage:
    """The part of the model one pipeline stage holds (per tensor-parallel rank)."""

    layer_indices: tuple[int, ...]
    first: bool
    last: bool
    in_flight_micro_batches: int  # 1F1B: stage k keeps pp - k micro-batches of activations alive


def _stages(spec: ModelSpec, layout: Layout, grad_accum_steps: int) -> list[_Stage]:
    """The first and the last pipeline stage: one of them is always the most loaded."""
    layers = len(_counts(spec).layer_params)
    per_stage = math.ceil(layers / layout.pp)
    if layout.pp == 1:
        return [_Stage(tuple(range(layers)), True, True, 1)]
    # 1F1B (Narayanan et al. 2021, PipeDream-Flush): stage 0 holds up to pp micro-batches in flight.
    # An uneven split (61 layers on 8 stages) has stages of ceil and floor layers; either end may be a full one.
    first = _Stage(tuple(range(min(per_stage, layers))), True, False, min(layout.pp, grad_accum_steps))
    last = _Stage(tuple(range(max(layers - per_stage, 1), layers)), False, True, 1)
    return [first, last]


def _stage_params(counts: ParamCount, stage: _Stage) -> int:
    layers = sum(counts.layer_params[i] for i in stage.layer_indices)
    return layers + (counts.embedding_params if stage.first else 0) + (counts.output_params if stage.last else 0)


def _linear_layer_params(counts: ParamCount) -> int:
    """Weights of the matrices inside the blocks (what quantization and AMP casts touch), all layers."""
    return sum(w.params for w in counts.weights if w.component in ("attention", "mlp") and w.in_features)


def _largest_matrix_params(counts: ParamCount) -> int:
    """The biggest quantized matrix inside the blocks (embeddings and head stay 16-bit)."""
    return max(
        (w.params for w in counts.weights if w.in_features and not w.experts and w.component in ("attention", "mlp")),
        default=0,
    )


# ---------------------------------------------------------------- activations


@dataclass(frozen=True)
class _Block:
    """The projections of one block, grouped by the tensor they read (what decides what is saved)."""

    after_attention_norm: tuple[str, ...]  # read the attention norm's output
    attention_output: str  # reads the attention output (width q_dim)
    after_mlp_norm: tuple[str, ...]  # read the MLP norm's output
    mlp_output: str  # reads the MLP's hidden activation (width intermediate)


def _block(spec: ModelSpec) -> _Block:
    if spec.model_type == "phi3":
        return _Block(("qkv_proj",), "o_proj", ("gate_up_proj",), "down_proj")
    if spec.model_type == "gpt2":
        return _Block(("c_attn",), "c_proj", ("c_fc",), "c_proj")
    if spec.is_mla:
        first = "q_a_proj" if spec.q_lora_rank else "q_proj"
        return _Block((first, "kv_a_proj_with_mqa"), "o_proj", ("gate_proj", "up_proj"), "down_proj")
    mlp_in = ("up_proj",) if spec.model_type in _NON_GATED_MLP else ("gate_proj", "up_proj")
    return _Block(("q_proj", "k_proj", "v_proj"), "o_proj", mlp_in, "down_proj")


def _autocast(setup: TrainingSetup, layout: Layout) -> bool:
    """torch AMP: fp32 weights cast to half per op. Only without ZeRO: DeepSpeed and FSDP mixed precision
    compute with half-precision parameters, which saves activations exactly like a pure-bf16 model."""
    return setup.precision.endswith("-mixed") and layout.zero_stage == 0


def _residual_bytes(setup: TrainingSetup, layout: Layout) -> int:
    """The residual stream's dtype: fp32 weights (fp32, or AMP training fp32 weights) keep it fp32;
    a half-precision model (pure bf16, ZeRO/FSDP mixed precision, or the frozen bf16 base of
    LoRA/prompt tuning under AMP) keeps it half."""
    if setup.precision == "fp32":
        return _FP32
    if _autocast(setup, layout) and setup.method in ("full", "freeze"):
        return _FP32
    return _HALF


_EXPERT_TARGETS = {"gate_proj", "up_proj", "down_proj", "w1", "w2", "w3", "gate_up_proj"}


def _lora_on_experts(spec: ModelSpec, setup: TrainingSetup) -> bool:
    """Whether LoRA reaches the routed experts (the default targets do; see params.default_lora_targets)."""
    if not spec.is_moe or setup.method not in ("lora", "qlora"):
        return False
    return setup.lora_targets is None or bool(_EXPERT_TARGETS & set(setup.lora_targets))


def _adapted(setup: TrainingSetup, name: str) -> bool:
    if setup.method not in ("lora", "qlora"):
        return False
    return setup.lora_targets is None or name in setup.lora_targets


def activation_bytes_per_token_layer(spec: ModelSpec, setup: TrainingSetup, layout: Layout = Layout()) -> float:
    """Bytes one transformer block saves for backward, per token of the micro-batch, without recomputation.

    After Korthikanti et al. 2022 eq. (2), sbh(34 + 5as/h), itemised for what the HF Llama-family block
    really saves (each term checked against the fake-tensor simulation, plan/simulate.py):
      RMSNorm: its input upcast to fp32 (4h); the normalised tensor (if the norm's weight trains); and its
        output once for every projection that needs it - shared when no cast happens, one bf16 copy per
        projection under AMP, one fp32 copy per LoRA adapter when peft casts to the adapter's fp32;
      attention: rotated q, k, v (kv_dim: GQA is not repeated by SDPA) and the SDPA output; eager
        attention adds the fp32 softmax and its cast (Korthikanti's 5as/h term) and repeats k and v;
      SwiGLU: gate, SiLU(gate), up, and their product when down_proj needs it.
    A frozen projection saves nothing (its weight is enough for the input gradient); a LoRA adapter
    saves its input and its rank-r hidden. Tensor parallelism splits everything but the norms,
    sequence parallelism the norms too.
    """
    h = spec.hidden_size
    amp = _autocast(setup, layout)
    residual = _residual_bytes(setup, layout)
    compute = _FP32 if setup.precision == "fp32" else _HALF
    if spec.is_mla:
        q_dim = spec.num_attention_heads * (spec.qk_nope_head_dim + spec.qk_rope_head_dim)
        k_dim, v_dim = q_dim, spec.num_attention_heads * spec.v_head_dim  # HF expands the latent per head
        out_dim = v_dim
    else:
        q_dim = out_dim = spec.num_attention_heads * spec.head_dim
        k_dim = v_dim = spec.num_kv_heads * spec.head_dim
    if setup.attention == "eager" and not spec.is_mla:
        k_dim = v_dim = q_dim  # eager repeats k and v to every query head before the matmul
    # A LoRA adapter's saved input: the tensor itself in fp32 runs, a bf16 cast under AMP, an fp32 cast otherwise.
    adapter_input = _FP32 if setup.precision == "fp32" else (_HALF if amp else _FP32)
    adapter_hidden = (_HALF if amp else _FP32) * setup.lora_rank
    trains_base = setup.method in ("full", "freeze")  # freeze: only its trained blocks save (training_memory)
    block = _block(spec)

    def consumers(names: tuple[str, ...], width: int, produced: int) -> tuple[float, float]:
        """(the tensor itself if a projection keeps it, cast copies) for the projections reading one tensor."""
        shared = copies = 0.0
        for name in names:
            if trains_base:
                if amp and produced == _FP32:
                    copies += _HALF * width  # autocast casts the fp32 input for each projection
                else:
                    shared = produced * width
            if _adapted(setup, name):
                copies += adapter_hidden
                if setup.precision == "fp32":
                    shared = produced * width
                else:
                    copies += adapter_input * width
        return shared, copies

    def norm(names: tuple[str, ...]) -> float:
        if spec.model_type in _LAYER_NORM:
            # nn.LayerNorm saves its input (plus per-token mean and rstd), no upcast copy, no normalised tensor.
            return residual * h + sum(consumers(names, h, residual))
        normalised = residual * h if trains_base else 0  # saved by `weight * x` only when weight needs a gradient
        return _FP32 * h + normalised + sum(consumers(names, h, residual))

    saved = norm(block.after_attention_norm) + norm(block.after_mlp_norm)
    saved += compute * (q_dim + k_dim + v_dim + out_dim)  # SDPA keeps q, k, v and its output
    if spec.model_type in _QK_NORM:
        # Per-head RMSNorm of q and k (Qwen3, Gemma 3): their fp32 upcasts, and the normalised tensors if trained.
        saved += (_FP32 + (compute if trains_base else 0)) * (q_dim + spec.num_kv_heads * spec.head_dim)
    saved += consumers((block.attention_output,), out_dim, compute)[1]  # the tensor itself: SDPA's output, kept above
    if setup.attention == "eager":
        # fp32 softmax probabilities + their cast to the compute dtype, per head and key position.
        saved += (_FP32 + compute) * spec.num_attention_heads * setup.seq_len
    mlp_inner = _mlp_inner_width(spec)
    saved += compute * _mlp_saved_width(spec)
    saved += sum(consumers((block.mlp_output,), mlp_inner, compute))
    if spec.config.get("activation_function", spec.config.get("hidden_act")) == "gelu_new":
        # HF's NewGELUActivation is tanh-GELU written in Python: it saves tanh(.), 0.5x and 1 + tanh(.).
        saved += 3 * compute * mlp_inner
    if float(spec.config.get("resid_pdrop", 0.1 if spec.model_type == "gpt2" else 0.0) or 0.0) > 0:
        saved += 2 * h  # residual dropout after attention and after the MLP: a 1-byte mask each
    if setup.recompute == "selective":
        # Selective recomputation (Korthikanti §5) re-runs the attention core: q, k, v and its output are not kept.
        saved -= compute * (q_dim + k_dim + v_dim)
        if setup.attention == "eager":
            saved -= (_FP32 + compute) * spec.num_attention_heads * setup.seq_len
    tp = layout.tp
    norms_split = tp if layout.sequence_parallel else 1
    norms_part = 2 * _FP32 * h + (2 * residual * h if trains_base else 0)
    return norms_part / norms_split + (saved - norms_part) / tp


def _mlp_inner_width(spec: ModelSpec) -> int:
    if spec.is_moe:
        return spec.experts_per_token * spec.moe_intermediate_size
    return spec.intermediate_size


def _mlp_saved_width(spec: ModelSpec) -> int:
    """Elements per token the MLP saves before down_proj: gate, act(gate), up for SwiGLU; fc for GELU MLPs."""
    if spec.is_moe:
        # Each of the top-k experts runs a SwiGLU on a gathered copy of the token, and its output is gathered back.
        routed = spec.experts_per_token * (3 * spec.moe_intermediate_size + 2 * spec.hidden_size)
        shared = 4 * spec.moe_intermediate_size * spec.num_shared_experts
        return routed + shared + spec.num_experts  # + router logits
    if spec.model_type in _NON_GATED_MLP:
        return spec.intermediate_size
    return 3 * spec.intermediate_size


def _is_classifier(spec: ModelSpec) -> bool:
    """A reward model or classifier (lmforge.plan.models.as_sequence_classifier): a score head, no LM head."""
    return spec.architecture.endswith("ForSequenceClassification")


def _head_outputs(spec: ModelSpec) -> int:
    """Outputs of the last linear layer: the vocabulary, or a classifier's labels."""
    return num_labels(spec) if _is_classifier(spec) else spec.vocab_size


def _logits_bytes(spec: ModelSpec, setup: TrainingSetup, layout: Layout) -> int:
    """The loss's vocabulary tensors at the start of backward: HF upcasts logits to fp32 and cross-entropy
    keeps its log-softmax (4 B), then backward holds the incoming and outgoing fp32 gradients (4 + 4 B).
    A classifier's head scores every position too (transformers pools the last one afterwards)."""
    tokens = setup.micro_batch_size * setup.seq_len
    return 3 * _FP32 * tokens * _head_outputs(spec) // layout.tp  # vocab-parallel cross-entropy splits the vocabulary


# ---------------------------------------------------------------- training


def _optimizer_bytes_per_param(setup: TrainingSetup, state_bytes: int, adafactor_ratio: float) -> float:
    """Optimizer state bytes per trainable parameter; `state_bytes` is the state dtype (4, or 2 in pure bf16)."""
    if setup.optimizer == "adamw":
        return 2 * state_bytes  # exp_avg + exp_avg_sq (Loshchilov & Hutter 2019)
    if setup.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        # bitsandbytes blockwise 8-bit: two uint8 states + one fp32 absmax per 256-value block each (Dettmers et al. 2022).
        return 2 * (1 + 4 / 256)
    if setup.optimizer == "sgd":
        return state_bytes  # the momentum buffer
    # Adafactor (Shazeer & Stern 2018): row and column second-moment factors of each matrix, no first moment.
    return state_bytes * adafactor_ratio


def training_memory(spec: ModelSpec, setup: TrainingSetup, layout: Layout = Layout()) -> MemoryBreakdown:
    """Peak bytes per GPU of one training step (the most loaded rank), by category."""
    stages = [_training_stage(spec, setup, layout, stage) for stage in _stages(spec, layout, setup.grad_accum_steps)]
    return max((memory for memory, _ in stages), key=lambda m: m.total_bytes)


def model_states_bytes(spec: ModelSpec, setup: TrainingSetup, layout: Layout = Layout()) -> int:
    """Weights + fp32 master + all gradients + optimizer states on the most loaded GPU: the ZeRO paper's
    "model states" (Rajbhandari et al. 2020 §3.1: (2 + 2 + K) bytes per parameter, K = 12 for mixed-precision Adam)."""
    stages = [_training_stage(spec, setup, layout, stage) for stage in _stages(spec, layout, setup.grad_accum_steps)]
    return max(states for _, states in stages)


def _training_stage(
    spec: ModelSpec, setup: TrainingSetup, layout: Layout, stage: _Stage
) -> tuple[MemoryBreakdown, int]:
    counts = _counts(spec)
    all_layers = len(counts.layer_params)
    stage_params = _stage_params(counts, stage)
    layer_share = len(stage.layer_indices) / max(all_layers, 1)
    tp, dp = layout.tp, layout.dp
    zero = layout.zero_stage
    amp = _autocast(setup, layout)
    sharded_states = dp if zero >= 1 else 1  # ZeRO-1: optimizer states (and fp32 master) split over DP
    sharded_grads = dp if zero >= 2 else 1  # ZeRO-2: gradients too
    sharded_params = dp if zero >= 3 else 1  # ZeRO-3 / FSDP full shard: parameters too (Rajbhandari et al. 2020 §5)

    # Which parameters train on this stage, and which stay frozen.
    adapter_params = 0
    if setup.method == "full":
        trainable, first_trained = stage_params, 0
    elif setup.method == "freeze":
        first_trained = all_layers - min(setup.freeze_last_n, all_layers)
        trainable = sum(counts.layer_params[i] for i in stage.layer_indices if i >= first_trained)
        trainable += counts.output_params if stage.last and not spec.tie_word_embeddings else 0
    else:
        first_trained = 0
        trainable = 0
        total_adapter = _adapter_params(
            spec, setup.method, setup.lora_rank, setup.lora_targets, setup.freeze_last_n, setup.num_virtual_tokens
        )
        if setup.method in ("lora", "qlora", "prefix"):
            adapter_params = round(total_adapter * layer_share)
        else:  # prompt tuning: the virtual-token embedding sits with the input embeddings
            adapter_params = total_adapter if stage.first else 0
    frozen = stage_params - trainable

    out = dict.fromkeys(CATEGORIES, 0)
    cpu = 0
    # --- weights: the trained model's working copy and the frozen base
    if setup.method == "qlora":
        # QLoRA: block matrices in NF4 / int8, embeddings, norms and head in bf16 (Dettmers et al. 2023).
        matrices = round(_linear_layer_params(counts) * layer_share)
        bits = nf4_bits_per_weight(setup.double_quant) if setup.qlora_bits == 4 else 8.0
        frozen_bytes = matrices * bits / 8 + (frozen - matrices) * _HALF
    else:
        frozen_bytes = frozen * (_FP32 if setup.precision == "fp32" else _HALF)
    if setup.precision == "fp32":
        trained_weight, grad_bytes, master, state_bytes = _FP32, _FP32, 0, _FP32
    elif setup.precision == "bf16":
        trained_weight, grad_bytes, master, state_bytes = _HALF, _HALF, 0, _HALF
    elif zero == 0:
        # torch AMP (Trainer, DDP): the fp32 parameters are trained directly and get fp32 gradients.
        trained_weight, grad_bytes, master, state_bytes = _FP32, _FP32, 0, _FP32
    else:
        # DeepSpeed / FSDP mixed precision: half-precision parameters and gradients, fp32 master copy
        # (Micikevicius et al. 2018; the ZeRO paper's 2 + 2 + K bytes with K = 12 for Adam).
        trained_weight, grad_bytes, master, state_bytes = _HALF, _HALF, _FP32, _FP32
    weights = (trainable * trained_weight + frozen_bytes) / tp / sharded_params
    master_weights = trainable * master / tp / sharded_states
    adafactor_ratio = _adafactor_ratio(counts, setup) if setup.optimizer == "adafactor" else 0.0
    optimizer = trainable * _optimizer_bytes_per_param(setup, state_bytes, adafactor_ratio)
    optimizer += adapter_params * _optimizer_bytes_per_param(setup, _FP32, adafactor_ratio)  # fp32 adapters
    optimizer = optimizer / tp / sharded_states
    # peft keeps adapters (and prompt/prefix embeddings) in fp32 and trains them with fp32 gradients.
    adapter = adapter_params * _FP32 / tp
    gradients = (trainable * grad_bytes / tp) / sharded_grads + adapter_params * _FP32 / tp
    if layout.offload_optimizer:
        # ZeRO-Offload (Ren et al. 2021): optimizer states and the fp32 master live and update in CPU RAM.
        cpu += int(optimizer + master_weights)
        optimizer = master_weights = 0
    if layout.offload_params:
        cpu += int(weights)
        weights = 0

    # --- activations of the forward-backward peak
    tokens = setup.micro_batch_size * setup.seq_len
    per_layer = activation_bytes_per_token_layer(spec, setup, layout) * tokens
    if setup.method == "freeze":
        # Blocks before the first trained one get no gradient at all, so autograd saves nothing for them.
        saving_layers = sum(1 for i in stage.layer_indices if i >= first_trained)
    else:
        saving_layers = len(stage.layer_indices)
    residual = _residual_bytes(setup, layout)
    h = spec.hidden_size
    recompute_layer = 0.0
    if setup.recompute == "full":
        # Full recomputation keeps each block's input; backward re-runs one block at a time, after the
        # loss's vocabulary tensors are freed, so that block competes with them rather than adding to them.
        split = tp if layout.sequence_parallel else 1
        activations = saving_layers * residual * h * tokens / split * stage.in_flight_micro_batches
        recompute_layer = per_layer if saving_layers else 0.0
    else:
        activations = per_layer * saving_layers * stage.in_flight_micro_batches
    if _lora_on_experts(spec, setup):
        # peft (ParamWrapper) adapts a fused 3-D expert tensor by building W + B·A for the whole tensor in
        # the forward; that merged weight is saved for backward: one expert-sized copy per MoE layer.
        moe_layers = set(moe_layer_indices(spec.model_type, spec.text_config, spec.num_layers))
        per_layer_experts = counts.expert_params / max(len(moe_layers), 1)
        merged = per_layer_experts * (_FP32 if setup.precision == "fp32" else _HALF) / tp
        moe_here = sum(1 for i in stage.layer_indices if i in moe_layers)
        held = 1 if setup.recompute == "full" else moe_here * stage.in_flight_micro_batches
        activations += merged * held
    if stage.last:
        # The final norm: fp32 upcast, plus the normalised tensor and lm_head's input when the head trains.
        head_trains = setup.method in ("full", "freeze")
        cast = _HALF if amp and residual == _FP32 else residual
        activations += (_FP32 + (residual + cast if head_trains else 0)) * h * tokens

    buffers_fb = 0.0
    if amp and setup.method in ("full", "freeze"):
        # AMP casts each fp32 weight matrix to bf16 and keeps the cast for backward; under full
        # recomputation only the head's cast survives the forward (a block's casts live while it re-runs).
        matrices_cast = trainable * _linear_share(spec, counts)
        if setup.recompute == "full":
            head_cast = _head_outputs(spec) * h if stage.last else 0
            recompute_layer += _HALF * (matrices_cast - head_cast) / max(saving_layers, 1) / tp
            matrices_cast = head_cast
        buffers_fb += _HALF * matrices_cast / tp
    if zero >= 3 or layout.offload_params:
        # ZeRO-3 / FSDP gathers a layer's full parameters before using it, prefetching the next (2 layers live).
        buffers_fb += 2 * counts.params_per_layer * (trained_weight if trainable else _HALF) / tp
    if setup.method == "qlora":
        # bitsandbytes dequantizes one weight matrix to bf16 for each matmul (forward and backward).
        buffers_fb += 2 * _largest_matrix_params(counts) * _HALF / tp
    logits = _logits_bytes(spec, setup, layout) if stage.last else 0
    if logits >= recompute_layer:
        buffers_fb += logits
    else:
        activations += recompute_layer
    # The head's gradient (or the tied embedding's) is created first, while the loss tensors are alive.
    head_grad = 0
    if stage.last and trainable:
        head_grad = _head_outputs(spec) * spec.hidden_size * grad_bytes / tp / sharded_grads

    # A tied embedding's gradient arrives twice: the head's part first, then the embedding's own dense
    # gradient, which autograd adds out of place - two more vocab x hidden tensors at the end of backward.
    accumulation = 0.0
    if stage.first and trainable and spec.tie_word_embeddings and not _is_classifier(spec):
        accumulation = 2 * spec.vocab_size * h * grad_bytes / tp

    # Plain DDP (ZeRO 0, dp > 1) all-reduces through flat bucket buffers as large as all gradients, allocated
    # once beside them (torch DistributedDataParallel, gradient_as_bucket_view=False, its default).
    ddp_buckets = gradients if zero == 0 and dp > 1 else 0.0

    persistent = weights + master_weights + optimizer + adapter + ddp_buckets
    forward_backward = persistent + activations + buffers_fb + head_grad + adapter_params * _FP32 / tp
    backward_end = persistent + gradients + accumulation  # then the optimizer step, with nothing but these
    if forward_backward >= backward_end:
        phase = "forward-backward"
        out.update(activations=activations, buffers=buffers_fb + ddp_buckets)
        out.update(gradients=head_grad + adapter_params * _FP32 / tp)
    else:
        phase = "backward-end" if accumulation else "optimizer-step"
        out.update(gradients=gradients, buffers=accumulation + ddp_buckets)
    out.update(weights=weights, master_weights=master_weights, optimizer_states=optimizer, adapter=adapter)
    tensors = sum(out.values())
    slack = ALLOCATOR_SLACK_RECOMPUTE if setup.recompute == "full" else ALLOCATOR_SLACK
    out["overhead"] = CUDA_CONTEXT_BYTES + slack * tensors
    states = round(weights + master_weights + gradients + optimizer + adapter)
    return MemoryBreakdown({k: round(v) for k, v in out.items()}, cpu_offload_bytes=cpu, peak_phase=phase), states


def _linear_share(spec: ModelSpec, counts: ParamCount) -> float:
    """Fraction of all parameters that are matrices AMP casts (everything but embeddings and norms)."""
    head = _head_outputs(spec) * spec.hidden_size if _is_classifier(spec) or not spec.tie_word_embeddings else 0
    return (_linear_layer_params(counts) + head) / max(counts.total_params, 1)


def _adafactor_ratio(counts: ParamCount, setup: TrainingSetup) -> float:
    """Adafactor state elements per parameter: rows + columns of each matrix over its size."""
    matrices = [w for w in counts.weights if w.in_features and w.out_features]
    if setup.method in ("lora", "qlora"):
        r = setup.lora_rank  # A is in x r, B is r x out
        factors = sum(w.in_features + w.out_features + 2 * r for w in matrices)
        return factors / max(sum(r * (w.in_features + w.out_features) for w in matrices), 1)
    factors = sum((w.in_features + w.out_features) * max(w.experts, 1) for w in matrices)
    return factors / max(sum(w.params for w in matrices), 1)


# ---------------------------------------------------------------- inference


def kv_cache_bytes_per_token(spec: ModelSpec, kv_dtype: str = "bf16", layout: Layout = Layout()) -> int:
    """KV-cache bytes per token of context, all layers of one GPU's share.

    MHA/GQA/MQA keep a key and a value per KV head (2 x kv_heads x head_dim per layer; Shazeer 2019,
    Ainslie et al. 2023). MLA keeps one compressed latent plus the shared rotary key per layer,
    kv_lora_rank + qk_rope_head_dim (DeepSeek-V2 §2.1.2), whatever the head count.
    """
    element = _KV_BYTES[kv_dtype]
    layers = math.ceil(spec.num_layers / layout.pp)
    if spec.is_mla:
        return layers * (spec.kv_lora_rank + spec.qk_rope_head_dim) * element  # replicated across TP ranks
    kv_heads_here = math.ceil(spec.num_kv_heads / layout.tp)  # fewer KV heads than ranks: each rank keeps one
    return layers * 2 * kv_heads_here * spec.head_dim * element


def inference_memory(spec: ModelSpec, setup: InferenceSetup, layout: Layout = Layout()) -> MemoryBreakdown:
    """Bytes per GPU to serve `spec`: weights, KV cache for the batch's full context, prefill peak, overhead."""
    counts = _counts(spec)
    fmt = weight_format(setup.weight_format)
    tp, pp = layout.tp, layout.pp
    matrices = _linear_layer_params(counts)
    ends = {"first": counts.embedding_params, "last": counts.output_params}  # embeddings; final norm + head
    rest_bits = fmt.bits_per_weight if fmt.quantizes_embeddings else 16  # bitsandbytes/GPTQ/AWQ keep them 16-bit
    in_layers = counts.total_params - matrices - sum(ends.values())  # norms, routers
    layers = (matrices * fmt.bits_per_weight + in_layers * rest_bits) / 8
    # Pipeline stages split the layers; the first adds the embeddings, the last the head (the heavier counts).
    if pp == 1:
        weights = layers + sum(ends.values()) * rest_bits / 8
    else:
        weights = layers / pp + max(ends.values()) * rest_bits / 8
    weights /= tp

    per_token = kv_cache_bytes_per_token(spec, setup.kv_dtype, layout)
    sliding = spec.num_sliding_layers
    tokens = setup.batch_size * setup.context_len
    kv = per_token * tokens
    if sliding:
        window_tokens = setup.batch_size * min(setup.context_len, spec.sliding_window or setup.context_len)
        kv = per_token * (tokens * (spec.num_layers - sliding) + window_tokens * sliding) / spec.num_layers

    # Prefill of the whole prompt at once, under no_grad: one block's transient tensors (residual, its fp32
    # norm upcast, the MLP's gate, up and activation) in bf16, plus fp32 logits for the last position only
    # (generate computes logits_to_keep=1).
    prefill_tokens = setup.batch_size * setup.prefill_tokens
    block = (_HALF * 2 * spec.hidden_size + _FP32 * spec.hidden_size + _HALF * 3 * _mlp_inner_width(spec)) / tp
    activations = prefill_tokens * block
    buffers = _FP32 * setup.batch_size * spec.vocab_size / tp
    if setup.weight_format in ("int4", "nf4", "int8", "fp8"):
        buffers += _largest_matrix_params(counts) * _HALF / tp  # one dequantized matrix (bitsandbytes / fallback kernels)
    out = dict.fromkeys(CATEGORIES, 0)
    out.update(weights=weights, kv_cache=kv, activations=activations, buffers=buffers)
    tensors = sum(out.values())
    out["overhead"] = CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * tensors
    return MemoryBreakdown({k: round(v) for k, v in out.items()}, peak_phase="inference")
