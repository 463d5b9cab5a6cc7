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

from lmforge.plan.families import family
from lmforge.plan.models import moe_layer_indices
from lmforge.plan.params import (
    ParamCount,
    count_params,
    count_trainable_params,
    lora_params_by_block,
    mlp_activation,
    mlp_kind,
    num_labels,
)
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


@lru_cache(maxsize=64)
def _counts(spec: ModelSpec) -> ParamCount:
    # The layout search prices dozens of layouts of one spec; count its weights once.
    return count_params(spec)


@lru_cache(maxsize=64)
def _adapters_by_block(
    spec: ModelSpec, method: str, rank: int, targets: tuple[str, ...] | None, virtual_tokens: int
) -> tuple[float, tuple[float, ...], float]:
    """Adapter parameters (LoRA, prefix or prompt embeddings) before the blocks, in each block, after them."""
    layers = len(_counts(spec).layer_params)
    if method in ("lora", "qlora"):
        return lora_params_by_block(spec, rank, list(targets) if targets else None)
    total = count_trainable_params(spec, method, num_virtual_tokens=virtual_tokens)
    if method == "prefix":  # peft PrefixEncoder: a key and a value prefix for every layer
        return 0.0, (total / max(layers, 1),) * layers, 0.0
    return float(total), (0.0,) * layers, 0.0  # prompt tuning: the virtual-token embedding sits with the embeddings


@dataclass(frozen=True)
class _Stage:
    """The part of the model one pipeline stage holds (per tensor-parallel rank)."""

    layer_indices: tuple[int, ...]
    first: bool
    last: bool
    in_flight_micro_batches: int  # 1F1B: stage k keeps min(pp - k, micro-batches) of activations alive


def pipeline_split(num_layers: int, pp: int) -> list[tuple[int, ...]]:
    """The layers of each stage: sizes differ by at most one, the first stages take the extra layers
    (DeepSpeed's uniform partition: 61 layers on 8 stages are 8 x 5 and 7 x 3)."""
    base, extra = divmod(num_layers, pp)
    stages, start = [], 0
    for k in range(pp):
        size = base + (1 if k < extra else 0)
        stages.append(tuple(range(start, start + size)))
        start += size
    return stages


def _stages(spec: ModelSpec, layout: Layout, setup: TrainingSetup) -> list[_Stage]:
    """Every pipeline stage that can be the most loaded one: each is priced from its own layers (DeepSeek's
    dense first layers are far lighter than its MoE layers); of identical middle stages only the earliest,
    which holds the most micro-batches in flight, is kept."""
    counts = _counts(spec)
    layers = len(counts.layer_params)
    if layout.pp == 1:
        return [_Stage(tuple(range(layers)), True, True, 1)]
    first_trained = _first_trained_layer(setup, layers)
    kept: dict[tuple[bool, bool, tuple[int, ...], tuple[int, ...], int], _Stage] = {}
    for k, indices in enumerate(pipeline_split(layers, layout.pp)):
        # 1F1B (Narayanan et al. 2021, PipeDream-Flush): stage k holds min(pp - k, m) micro-batches in flight.
        stage = _Stage(indices, k == 0, k == layout.pp - 1, min(layout.pp - k, setup.grad_accum))
        key = (
            stage.first,
            stage.last,
            tuple(counts.layer_params[i] for i in indices),
            tuple(counts.layer_matrix_params[i] for i in indices),
            sum(1 for i in indices if i >= first_trained),
        )
        kept.setdefault(key, stage)
    return list(kept.values())


def _first_trained_layer(setup: TrainingSetup, layers: int) -> int:
    """Freeze tuning trains the last trainable_layers blocks; every other method reaches every block."""
    return layers - min(setup.trainable_layers, layers) if setup.method == "freeze" else 0


def _linear_layer_params(counts: ParamCount) -> int:
    """Weights of every matrix (what inference quantization and AMP casts touch), vision tower included."""
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
    facts = family(spec.model_type)
    if facts.fused_qkv:  # Phi-3
        return _Block(("qkv_proj",), "o_proj", ("gate_up_proj",), "down_proj")
    if facts.blocks == "gpt2":
        return _Block(("c_attn",), "c_proj", ("c_fc",), "c_proj")
    if facts.blocks == "falcon":
        return _Block(("query_key_value",), "dense", ("dense_h_to_4h",), "dense_4h_to_h")
    if spec.is_mla:
        first = "q_a_proj" if spec.q_lora_rank else "q_proj"
        return _Block((first, "kv_a_proj_with_mqa"), "o_proj", ("gate_proj", "up_proj"), "down_proj")
    *mlp_in, mlp_out = mlp_kind(spec)[1]  # (gate, up, down) or (up, down): the names LoRA targets go by
    return _Block(("q_proj", "k_proj", "v_proj"), "o_proj", tuple(mlp_in), mlp_out)


def _autocast(setup: TrainingSetup, layout: Layout) -> bool:
    """torch AMP: fp32 weights cast to half per op. Only without ZeRO: DeepSpeed and FSDP mixed precision
    compute with half-precision parameters, which saves activations exactly like a pure-bf16 model."""
    return setup.precision.endswith("-mixed") and layout.zero_stage == 0


def _adapter_dtypes(setup: TrainingSetup, layout: Layout) -> tuple[int, int]:
    """(bytes of an adapter weight and of its gradient, bytes of its fp32 master copy): peft keeps adapters in
    fp32 (autocast_adapter_dtype), but DeepSpeed and FSDP mixed precision cast every trainable parameter to
    bf16 beside an fp32 master copy (ZeRO paper's 2 + 2 + 12 bytes), adapters included."""
    if setup.precision.endswith("-mixed") and layout.zero_stage >= 1:
        return _HALF, _FP32
    return _FP32, 0


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
    return setup.target_modules is None or bool(_EXPERT_TARGETS & set(setup.target_modules))


def _adapted(setup: TrainingSetup, name: str) -> bool:
    if setup.method not in ("lora", "qlora"):
        return False
    return setup.target_modules is None or name in setup.target_modules


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
    LayerNorm families save the norm's input instead of an fp32 upcast, and a plain MLP its up-projection's
    output: the norm and MLP are the family table's, as in the parameter inventory (params.mlp_kind).
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
    # A LoRA adapter's saved input: the tensor itself when the adapter has the input's dtype (fp32 runs, and
    # DeepSpeed/FSDP mixed precision, which casts the adapters to bf16 with the rest), a bf16 cast under AMP,
    # and an fp32 cast when peft keeps fp32 adapters beside a bf16 base.
    adapter_dtype = _adapter_dtypes(setup, layout)[0]
    adapter_input = _FP32 if setup.precision == "fp32" else (_HALF if amp else _FP32)
    adapter_hidden = (_HALF if amp else adapter_dtype) * setup.lora_r
    trains_base = setup.method in ("full", "freeze")  # freeze: only its trained blocks save (training_memory)
    facts = family(spec.model_type)
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
                if setup.precision == "fp32" or (not amp and adapter_dtype == produced):
                    shared = produced * width
                else:
                    copies += adapter_input * width
        return shared, copies

    def norm(names: tuple[str, ...]) -> float:
        if facts.norm == "layernorm":
            # nn.LayerNorm saves its input (plus per-token mean and rstd), no upcast copy, no normalised tensor.
            return residual * h + sum(consumers(names, h, residual))
        normalised = residual * h if trains_base else 0  # saved by `weight * x` only when weight needs a gradient
        return _FP32 * h + normalised + sum(consumers(names, h, residual))

    saved = norm(block.after_attention_norm) + norm(block.after_mlp_norm)
    saved += compute * (q_dim + k_dim + v_dim + out_dim)  # SDPA keeps q, k, v and its output
    if facts.qk_norm:
        # Per-head RMSNorm of q and k (Qwen3, Gemma 3): their fp32 upcasts, and the normalised tensors if trained.
        saved += (_FP32 + (compute if trains_base else 0)) * (q_dim + spec.num_kv_heads * spec.head_dim)
    saved += consumers((block.attention_output,), out_dim, compute)[1]  # the tensor itself: SDPA's output, kept above
    if setup.attention == "eager":
        # fp32 softmax probabilities + their cast to the compute dtype, per head and key position.
        saved += (_FP32 + compute) * spec.num_attention_heads * setup.seq_len
    mlp_inner = _mlp_inner_width(spec)
    saved += compute * _mlp_saved_width(spec)
    saved += sum(consumers((block.mlp_output,), mlp_inner, compute))
    if mlp_activation(spec) == "gelu_new":
        # HF's NewGELUActivation is tanh-GELU written in Python: it saves tanh(.), 0.5x and 1 + tanh(.).
        saved += 3 * compute * mlp_inner
    if float(spec.config.get("resid_pdrop", facts.resid_dropout) or 0.0) > 0:
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
    if mlp_kind(spec)[0] == "plain":
        return spec.intermediate_size
    return 3 * spec.intermediate_size


# trl's ChunkedLogProbFunction (trl/kernels/chunked_logprob.py): tiles of this many tokens x vocabulary entries.
TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768


def _is_classifier(spec: ModelSpec) -> bool:
    """A reward model or classifier (lmforge.plan.models.as_sequence_classifier): a score head, no LM head."""
    return spec.architecture.endswith("ForSequenceClassification")


def _head_outputs(spec: ModelSpec) -> int:
    """Outputs of the last linear layer: the vocabulary, or a classifier's labels (its head scores every position
    too; transformers pools the last one afterwards)."""
    return num_labels(spec) if _is_classifier(spec) else spec.vocab_size


def liger_chunk_tokens(tokens: int, vocab: int, hidden: int) -> int:
    """Liger's fused linear cross-entropy chunk: next_power_of_2(ceil(tokens / ceil(vocab / hidden))) tokens, so a
    chunk of logits costs about what the hidden states do (liger_kernel/ops/fused_linear_cross_entropy.py)."""
    chunk = math.ceil(tokens / math.ceil(vocab / hidden))
    return 1 << max(chunk - 1, 0).bit_length()


def loss_bytes(spec: ModelSpec, setup: TrainingSetup, layout: Layout, head_trains: bool) -> float:
    """The loss's own tensors at their largest, at the start of backward (on top of every saved activation).

    standard (transformers' ForCausalLMLoss): logits upcast to fp32, cross-entropy keeps its fp32 log-softmax,
        then backward holds the incoming and outgoing fp32 gradients: 3 x 4 bytes x tokens x vocabulary.
    chunked (trl's ChunkedLogProbFunction, what `train.loss: chunked` runs): the head is applied in tiles of
        4096 tokens x 32768 vocabulary entries in the compute dtype (one tile buffer, always 32768 wide),
        folded into per-token statistics and recomputed in backward, which accumulates fp32 gradients of
        the hidden states (and of a bf16 head's weight when it trains) and then casts them.
    fused (Liger's fused linear cross-entropy): the input's and the weight's gradients are computed chunk by
        chunk during the forward and kept for backward; a chunk of logits is as large as the hidden states.
    Vocabulary-parallel heads split all of it over TP ranks.
    """
    tokens = setup.micro_batch_size * setup.seq_len
    vocab, h = _head_outputs(spec), spec.hidden_size
    compute = _FP32 if setup.precision == "fp32" else _HALF
    if setup.loss == "standard":
        return 3 * _FP32 * tokens * vocab / layout.tp
    if setup.loss == "fused":
        chunk = min(liger_chunk_tokens(tokens, vocab, h), tokens)
        return (compute * tokens * h + compute * chunk * vocab) / layout.tp
    tile_bytes = (
        min(tokens, TRL_TOKEN_CHUNK) * TRL_VOCAB_CHUNK * compute
    )  # the full tile width, whatever the vocabulary
    # The fp32 weight gradient is cast to the weight's dtype at the end; for fp32 weights it is the gradient itself.
    head_weight_fp32 = setup.precision == "fp32" or (_autocast(setup, layout) and head_trains)
    grads_bytes = _FP32 * tokens * h + (_FP32 * vocab * h if head_trains and not head_weight_fp32 else 0)
    hidden_copy_bytes = compute * tokens * h if setup.micro_batch_size > 1 else 0  # [:, :-1] of a batch is not a view
    return (tile_bytes + grads_bytes + compute * tokens * h + hidden_copy_bytes) / layout.tp


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
    stages = [_training_stage(spec, setup, layout, stage) for stage in _stages(spec, layout, setup)]
    return max((memory for memory, _, _ in stages), key=lambda m: m.total_bytes)


def model_states_bytes(spec: ModelSpec, setup: TrainingSetup, layout: Layout = Layout()) -> int:
    """Weights + fp32 master + all gradients + optimizer states on the most loaded GPU: the ZeRO paper's
    "model states" (Rajbhandari et al. 2020 §3.1: (2 + 2 + K) bytes per parameter, K = 12 for mixed-precision Adam)."""
    stages = [_training_stage(spec, setup, layout, stage) for stage in _stages(spec, layout, setup)]
    return max(states for _, states, _ in stages)


def activation_bytes(spec: ModelSpec, setup: TrainingSetup, layout: Layout = Layout()) -> int:
    """The activations alive at the start of backward on the most loaded GPU, whichever moment is the peak (the
    breakdown shows them only when the forward-backward moment is)."""
    stages = [_training_stage(spec, setup, layout, stage) for stage in _stages(spec, layout, setup)]
    return max(saved for _, _, saved in stages)


@dataclass(frozen=True)
class _StageParams:
    """The parameters one pipeline stage holds, by what trains (whole tensors: before any TP, ZeRO or EP split)."""

    trained_layers: tuple[int, ...]  # blocks whose own weights train (full, freeze): only they save activations
    trainable: int  # trained base parameters, routed experts included
    trainable_experts: int
    frozen: int  # frozen base parameters, routed experts included
    frozen_experts: int
    experts: int  # every routed-expert parameter of the stage, trained or not
    adapters: float  # LoRA, prefix or prompt-tuning parameters
    head_trains: bool  # the LM head (or the tied embedding it reuses) gets a gradient

    @property
    def trainable_dense(self) -> int:
        return self.trainable - self.trainable_experts


def _stage_params(spec: ModelSpec, setup: TrainingSetup, stage: _Stage) -> _StageParams:
    """Count what this stage holds from its own blocks, plus the embeddings on the first and the head on the last."""
    counts = _counts(spec)
    here = stage.layer_indices
    method = setup.method
    first_trained = _first_trained_layer(setup, len(counts.layer_params))
    trained_layers = tuple(i for i in here if i >= first_trained) if method in ("full", "freeze") else ()
    stage_params = sum(counts.layer_params[i] for i in here)
    stage_params += (counts.embedding_params if stage.first else 0) + (counts.output_params if stage.last else 0)
    experts = sum(counts.layer_expert_params[i] for i in here)
    head_trains = method == "full" or (method == "freeze" and not spec.tie_word_embeddings)
    if method == "full":
        trainable, trainable_experts = stage_params, experts
    elif method == "freeze":
        # The last blocks, the final norm and an untied head; a tied head is the frozen input embedding.
        trainable = sum(counts.layer_params[i] for i in trained_layers) + (counts.output_params if stage.last else 0)
        trainable_experts = sum(counts.layer_expert_params[i] for i in trained_layers)
    else:
        trainable = trainable_experts = 0
    adapters = 0.0
    if method not in ("full", "freeze"):
        before, adapters_per_layer, after = _adapters_by_block(
            spec, method, setup.lora_r, setup.target_modules, setup.num_virtual_tokens
        )
        adapters = (
            sum(adapters_per_layer[i] for i in here) + (before if stage.first else 0) + (after if stage.last else 0)
        )
    return _StageParams(
        trained_layers=trained_layers,
        trainable=trainable,
        trainable_experts=trainable_experts,
        frozen=stage_params - trainable,
        frozen_experts=experts - trainable_experts,
        experts=experts,
        adapters=adapters,
        head_trains=head_trains,
    )


@dataclass(frozen=True)
class _Dtypes:
    """Bytes per parameter of each copy a training step keeps."""

    trained_weight_bytes: int
    grad_bytes: int
    master_bytes: int  # the fp32 master copy (0: the weights are trained directly)
    state_bytes: int  # the optimizer states' dtype
    adapter_weight_bytes: int  # an adapter weight, and its gradient
    adapter_master_bytes: int
    frozen_weight_bytes: int  # frozen base weights (QLoRA's quantized matrices aside)


def _dtypes(setup: TrainingSetup, layout: Layout) -> _Dtypes:
    """The dtype of each copy, from the precision and whether ZeRO/FSDP or torch AMP runs the mixed precision."""
    if setup.precision == "fp32":
        trained_weight, grad, master, state = _FP32, _FP32, 0, _FP32
    elif setup.precision == "bf16":
        trained_weight, grad, master, state = _HALF, _HALF, 0, _HALF
    elif layout.zero_stage == 0:
        # torch AMP (Trainer, DDP): the fp32 parameters are trained directly and get fp32 gradients.
        trained_weight, grad, master, state = _FP32, _FP32, 0, _FP32
    else:
        # DeepSpeed / FSDP mixed precision: half-precision parameters and gradients, fp32 master copy
        # (Micikevicius et al. 2018; the ZeRO paper's 2 + 2 + K bytes with K = 12 for Adam).
        trained_weight, grad, master, state = _HALF, _HALF, _FP32, _FP32
    adapter_weight, adapter_master = _adapter_dtypes(setup, layout)
    # Frozen weights: fp32 for fp32 runs and for freeze tuning under AMP (lmforge loads full/freeze in fp32);
    # the 16-bit base of LoRA and prompt tuning, or of any ZeRO/FSDP mixed-precision run, otherwise.
    trains_base = setup.method in ("full", "freeze")
    frozen = _FP32 if setup.precision == "fp32" or (_autocast(setup, layout) and trains_base) else _HALF
    return _Dtypes(trained_weight, grad, master, state, adapter_weight, adapter_master, frozen)


def _shard(layout: Layout, dense_bytes: float, expert_bytes: float, sharded: bool) -> float:
    """Bytes per GPU of a dense part and a routed-expert part: TP splits both; ZeRO splits its stage's
    category over all DP ranks; expert parallelism splits the experts over EP ranks (DeepSpeed-MoE)."""
    dp = layout.dp
    return dense_bytes / layout.tp / (dp if sharded else 1) + expert_bytes / layout.tp / (dp if sharded else layout.ep)


def _qlora_bits(setup: TrainingSetup) -> float:
    """Bits per weight of QLoRA's quantized block matrices: NF4 (with or without double quantization) or int8."""
    return nf4_bits_per_weight(setup.double_quant) if setup.quant_bits == 4 else 8.0


@dataclass(frozen=True)
class _ModelStates:
    """Weights, master copy, optimizer states and gradients on one GPU, and what ZeRO-Offload moved to CPU RAM."""

    weights_bytes: float
    master_weights_bytes: float
    optimizer_bytes: float
    adapter_bytes: float
    gradients_bytes: float  # all of them at the end of backward (the largest one with optimizer_in_backward)
    adapter_grads_bytes: float  # alive from the first micro-batch's backward on
    ddp_buckets_bytes: float
    cpu_bytes: float  # optimizer states, master copy and gradients offloaded to CPU RAM
    weights_cpu_bytes: float  # parameters offloaded to CPU RAM

    @property
    def persistent_bytes(self) -> float:
        """What stays allocated through the whole step."""
        return (
            self.weights_bytes
            + self.master_weights_bytes
            + self.optimizer_bytes
            + self.adapter_bytes
            + self.ddp_buckets_bytes
        )


# ZeRO-Offload keeps two gradient buckets on the GPU while it moves reduced partitions to the CPU: DeepSpeed's
# overlap_comm double-buffers reduce_bucket_size elements, which the HF integration's "auto" sets to hidden².
_OFFLOAD_BUCKETS = 2


def _model_states(
    spec: ModelSpec, setup: TrainingSetup, layout: Layout, stage: _Stage, params: _StageParams, dtypes: _Dtypes
) -> _ModelStates:
    """The ZeRO paper's model states of this stage, each split by TP, by ZeRO over DP (from the stage that
    shards it) and, for routed experts, by EP; then moved to CPU RAM where offload says so."""
    counts = _counts(spec)
    here = stage.layer_indices
    tp, dp, zero = layout.tp, layout.dp, layout.zero_stage
    h, vocab = spec.hidden_size, _head_outputs(spec)
    adapters, dense, experts = params.adapters, params.trainable_dense, params.trainable_experts
    if setup.method == "qlora":
        # QLoRA (Dettmers et al. 2023): block matrices in NF4 / int8, embeddings, norms and head in bf16.
        bits = _qlora_bits(setup)
        matrices = sum(counts.layer_matrix_params[i] for i in here)
        dense_frozen_bytes = (matrices - params.experts) * bits / 8 + (params.frozen - matrices) * _HALF
        expert_frozen_bytes = params.experts * bits / 8
    else:
        dense_frozen_bytes = (params.frozen - params.frozen_experts) * dtypes.frozen_weight_bytes
        expert_frozen_bytes = params.frozen_experts * dtypes.frozen_weight_bytes
    trained_weight, grad, master = dtypes.trained_weight_bytes, dtypes.grad_bytes, dtypes.master_bytes
    weights_bytes = _shard(
        layout, dense * trained_weight + dense_frozen_bytes, experts * trained_weight + expert_frozen_bytes, zero >= 3
    )
    weights_cpu_bytes = 0.0
    master_bytes = _shard(layout, dense * master, experts * master, zero >= 1)
    master_bytes += adapters * dtypes.adapter_master_bytes / tp / (dp if zero >= 1 else 1)
    adafactor_ratio = _adafactor_ratio(counts, setup) if setup.optimizer == "adafactor" else 0.0
    per_param = _optimizer_bytes_per_param(setup, dtypes.state_bytes, adafactor_ratio)
    optimizer_bytes = _shard(layout, dense * per_param, experts * per_param, zero >= 1)
    optimizer_bytes += (
        adapters * _optimizer_bytes_per_param(setup, _FP32, adafactor_ratio) / tp / (dp if zero >= 1 else 1)
    )
    adapter_bytes = adapters * dtypes.adapter_weight_bytes / tp / (dp if zero >= 3 else 1)
    adapter_grads_bytes = adapters * dtypes.adapter_weight_bytes / tp / (dp if zero >= 2 else 1)
    gradients_bytes = _shard(layout, dense * grad, experts * grad, zero >= 2) + adapter_grads_bytes
    cpu_bytes = 0.0
    if layout.offload_optimizer:
        # ZeRO-Offload (Ren et al. 2021 §4): optimizer states and the fp32 master update in CPU RAM, and the reduced
        # gradient partitions go there too (as fp32); the GPU keeps only the buckets it reduces through.
        grad_elements = _shard(layout, dense, experts, zero >= 2) + adapter_grads_bytes / dtypes.adapter_weight_bytes
        cpu_bytes += optimizer_bytes + master_bytes + _FP32 * grad_elements
        gradients_bytes = min(gradients_bytes, _OFFLOAD_BUCKETS * h * h * grad)
        optimizer_bytes = master_bytes = 0.0
    if layout.offload_params:
        weights_cpu_bytes, weights_bytes = weights_bytes, 0.0
    # Plain DDP (ZeRO 0, dp > 1) all-reduces through flat bucket buffers as large as all gradients, allocated
    # once beside them (torch DistributedDataParallel, gradient_as_bucket_view=False, its default).
    ddp_buckets_bytes = gradients_bytes if zero == 0 and dp > 1 else 0.0
    if setup.optimizer_in_backward:
        # torchtune optimizer_in_bwd: each parameter steps in its post-accumulate-grad hook and its gradient is freed
        # at once, so no full gradient set ever exists: only the largest single gradient, briefly.
        gradient_params = [w.params for i in params.trained_layers for w in counts.layer_weights[i]]
        gradient_params += [vocab * h] if params.head_trains and stage.last else []
        gradient_params += [spec.vocab_size * h] if setup.method == "full" and stage.first else []
        gradients_bytes = max(gradient_params, default=0) * grad / tp + adapter_grads_bytes
    return _ModelStates(
        weights_bytes=weights_bytes,
        master_weights_bytes=master_bytes,
        optimizer_bytes=optimizer_bytes,
        adapter_bytes=adapter_bytes,
        gradients_bytes=gradients_bytes,
        adapter_grads_bytes=adapter_grads_bytes,
        ddp_buckets_bytes=ddp_buckets_bytes,
        cpu_bytes=cpu_bytes,
        weights_cpu_bytes=weights_cpu_bytes,
    )


@dataclass(frozen=True)
class _Activations:
    """What the forward-backward peak adds to the model states, before the loss's own tensors."""

    saved_bytes: float  # every activation alive at the start of backward (the blocks' and the final norm's)
    recompute_layer_bytes: float  # full recomputation: the one block backward re-runs at a time
    buffers_bytes: float  # AMP weight casts, ZeRO-3 parameter gathers, QLoRA's dequantized matrix
    offloaded_bytes: float  # what activation offloading moved to CPU RAM


def _activations(
    spec: ModelSpec, setup: TrainingSetup, layout: Layout, stage: _Stage, params: _StageParams, dtypes: _Dtypes
) -> _Activations:
    """The saved activations of this stage's blocks and final norm, with the transient buffers beside them."""
    counts = _counts(spec)
    here, trained_layers = stage.layer_indices, params.trained_layers
    tp = layout.tp
    h, vocab = spec.hidden_size, _head_outputs(spec)  # the head's outputs: a classifier has no vocabulary head
    amp = _autocast(setup, layout)
    tokens = setup.micro_batch_size * setup.seq_len
    per_layer_bytes = activation_bytes_per_token_layer(spec, setup, layout) * tokens
    saving_layers = len(trained_layers) if setup.method == "freeze" else len(here)  # frozen blocks save nothing
    residual = _residual_bytes(setup, layout)
    in_flight = stage.in_flight_micro_batches
    recompute_layer_bytes = 0.0
    if setup.recompute == "full":
        # Full recomputation keeps each block's input; backward re-runs one block at a time, after the
        # loss's vocabulary tensors are freed, so that block competes with them rather than adding to them.
        split = tp if layout.sequence_parallel else 1
        saved_bytes = saving_layers * residual * h * tokens / split * in_flight
        recompute_layer_bytes = per_layer_bytes if saving_layers else 0.0
    else:
        saved_bytes = per_layer_bytes * saving_layers * in_flight
    if _lora_on_experts(spec, setup):
        # peft (ParamWrapper) adapts a fused 3-D expert tensor by building W + B·A for the whole tensor in
        # the forward; that merged weight is saved for backward: one expert-sized copy per MoE layer.
        moe_layers = set(moe_layer_indices(spec.model_type, spec.text_config, spec.num_layers))
        per_layer_experts = counts.expert_params / max(len(moe_layers), 1)
        merged_bytes = per_layer_experts * (_FP32 if setup.precision == "fp32" else _HALF) / tp / layout.ep
        moe_here = sum(1 for i in here if i in moe_layers)
        saved_bytes += merged_bytes * (1 if setup.recompute == "full" else moe_here * in_flight)
    head_bytes = 0.0
    if stage.last:
        # The final norm: fp32 upcast, plus the normalised tensor and lm_head's input when the head trains.
        cast = _HALF if amp and residual == _FP32 else residual
        head_bytes = (_FP32 + (residual + cast if params.head_trains else 0)) * h * tokens

    casts_bytes = 0.0
    buffers_bytes = 0.0
    if amp and setup.method in ("full", "freeze"):
        # AMP casts each trained fp32 weight matrix to bf16 and keeps the cast for backward (the head's too:
        # a tied embedding is cast for the head matmul); under full recomputation only the head's cast survives
        # the forward, a block's casts live while it re-runs.
        block_casts = sum(counts.layer_matrix_params[i] for i in trained_layers)
        head_cast = vocab * h if stage.last and params.head_trains else 0
        if setup.recompute == "full":
            recompute_layer_bytes += _HALF * block_casts / max(saving_layers, 1) / tp
            block_casts = 0
        casts_bytes = _HALF * block_casts / tp
        buffers_bytes += _HALF * head_cast / tp
    offloaded_bytes = 0.0
    if setup.offload_activations:
        # torchtune's OffloadActivations (trl's port): every saved tensor but parameters moves to CPU RAM in the
        # forward and comes back tensor by tensor in backward, the next one prefetched on a side stream: about two
        # of the largest saved tensors (an MLP intermediate) are on the GPU at once; the head's stay (NoOpManager).
        offloaded_bytes = saved_bytes + casts_bytes
        largest_saved = max(_mlp_inner_width(spec) * (_FP32 if setup.precision == "fp32" else _HALF), _FP32 * h)
        saved_bytes = 2 * largest_saved * tokens / tp if saving_layers and setup.recompute != "full" else 0.0
        casts_bytes = 0.0
    if layout.zero_stage >= 3 or layout.offload_params:
        # ZeRO-3 / FSDP gathers a layer's full parameters before using it, prefetching the next (2 layers live);
        # QLoRA gathers its 4-bit matrices as they are stored.
        if setup.method == "qlora":
            bits = _qlora_bits(setup)
            matrices_of = counts.layer_matrix_params
            largest_bytes = max(
                (
                    matrices_of[i] * bits / 8 + (counts.layer_params[i] - matrices_of[i]) * _HALF
                    for i in range(len(counts.layer_params))
                ),
                default=0,
            )
        else:
            largest_bytes = counts.params_per_layer * (dtypes.trained_weight_bytes if params.trainable else _HALF)
        buffers_bytes += 2 * largest_bytes / tp
    if setup.method == "qlora":
        # bitsandbytes dequantizes one weight matrix to bf16 for each matmul (forward and backward).
        buffers_bytes += 2 * _largest_matrix_params(counts) * _HALF / tp
    buffers_bytes += casts_bytes
    return _Activations(saved_bytes + head_bytes, recompute_layer_bytes, buffers_bytes, offloaded_bytes)


def _training_stage(
    spec: ModelSpec, setup: TrainingSetup, layout: Layout, stage: _Stage
) -> tuple[MemoryBreakdown, int, int]:
    """One stage's breakdown at its peak moment, its model states and its saved activations (bytes per GPU)."""
    params = _stage_params(spec, setup, stage)
    dtypes = _dtypes(setup, layout)
    states = _model_states(spec, setup, layout, stage, params, dtypes)
    acts = _activations(spec, setup, layout, stage, params, dtypes)
    tp, dp, zero = layout.tp, layout.dp, layout.zero_stage
    h, vocab = spec.hidden_size, _head_outputs(spec)
    activations_bytes, buffers_fb_bytes = acts.saved_bytes, acts.buffers_bytes
    loss_tensors_bytes = loss_bytes(spec, setup, layout, params.head_trains) if stage.last else 0.0
    # The head's gradient (or the tied embedding's) is the first gradient backward makes.
    head_trains_here = stage.last and params.head_trains
    head_grad_bytes = vocab * h * dtypes.grad_bytes / tp / (dp if zero >= 2 else 1) if head_trains_here else 0.0
    # Two moments at the start of backward: the loss's own tensors, then - once they are freed - the head's
    # gradient beside the first block backward re-runs under recomputation (the gradient stays alive). trl's
    # and Liger's heads make that gradient inside the loss, so there it is in both moments.
    inside_loss_bytes = head_grad_bytes if setup.loss != "standard" else 0.0
    if loss_tensors_bytes + inside_loss_bytes >= head_grad_bytes + acts.recompute_layer_bytes:
        buffers_fb_bytes += loss_tensors_bytes
        head_grad_bytes = inside_loss_bytes
    else:
        activations_bytes += acts.recompute_layer_bytes

    # A tied embedding's gradient arrives twice: the head's part first, then the embedding's own dense
    # gradient, which autograd adds out of place - two more vocab x hidden tensors at the end of backward.
    tied_head = spec.tie_word_embeddings and not _is_classifier(spec)
    tied_full = stage.first and setup.method == "full" and tied_head
    accumulation_bytes = 2 * vocab * h * dtypes.grad_bytes / tp if tied_full else 0.0

    gradients_bytes, ddp_buckets_bytes = states.gradients_bytes, states.ddp_buckets_bytes
    persistent_bytes = states.persistent_bytes
    # With gradient accumulation the earlier micro-batches' gradients stay alive through the next forward and backward.
    accumulating = setup.grad_accum > 1 and not setup.optimizer_in_backward
    accumulated_bytes = gradients_bytes if accumulating else states.adapter_grads_bytes
    forward_backward_bytes = (
        persistent_bytes + activations_bytes + buffers_fb_bytes + head_grad_bytes + accumulated_bytes
    )
    backward_end_bytes = (
        persistent_bytes + gradients_bytes + accumulation_bytes
    )  # then the optimizer step, nothing else
    out = dict.fromkeys(CATEGORIES, 0.0)
    if forward_backward_bytes >= backward_end_bytes:
        phase = "forward-backward"
        out.update(
            activations=activations_bytes,
            buffers=buffers_fb_bytes + ddp_buckets_bytes,
            gradients=head_grad_bytes + accumulated_bytes,
        )
    else:
        phase = "backward-end" if accumulation_bytes or setup.optimizer_in_backward else "optimizer-step"
        out.update(gradients=gradients_bytes, buffers=accumulation_bytes + ddp_buckets_bytes)
    out.update(
        weights=states.weights_bytes,
        master_weights=states.master_weights_bytes,
        optimizer_states=states.optimizer_bytes,
        adapter=states.adapter_bytes,
    )
    tensors_bytes = sum(out.values())
    slack = ALLOCATOR_SLACK_RECOMPUTE if setup.recompute == "full" else ALLOCATOR_SLACK
    out["overhead"] = CUDA_CONTEXT_BYTES + slack * tensors_bytes
    states_bytes = round(
        states.weights_bytes
        + states.master_weights_bytes
        + gradients_bytes
        + states.optimizer_bytes
        + states.adapter_bytes
    )
    cpu_bytes = states.cpu_bytes + acts.offloaded_bytes + states.weights_cpu_bytes
    breakdown = MemoryBreakdown(
        {k: round(v) for k, v in out.items()}, cpu_offload_bytes=round(cpu_bytes), peak_phase=phase
    )
    return breakdown, states_bytes, round(activations_bytes)


def _adafactor_ratio(counts: ParamCount, setup: TrainingSetup) -> float:
    """Adafactor state elements per parameter: rows + columns of each matrix over its size."""
    matrices = [w for w in counts.weights if w.in_features and w.out_features]
    if setup.method in ("lora", "qlora"):
        r = setup.lora_r  # A is in x r, B is r x out
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
    element_bytes = _KV_BYTES[kv_dtype]
    layers = math.ceil(spec.num_layers / layout.pp)
    if spec.is_mla:
        return layers * (spec.kv_lora_rank + spec.qk_rope_head_dim) * element_bytes  # replicated across TP ranks
    kv_heads_here = math.ceil(spec.num_kv_heads / layout.tp)  # fewer KV heads than ranks: each rank keeps one
    return layers * 2 * kv_heads_here * spec.head_dim * element_bytes


def inference_memory(spec: ModelSpec, setup: InferenceSetup, layout: Layout = Layout()) -> MemoryBreakdown:
    """Bytes per GPU to serve `spec`: weights, KV cache for the batch's full context, prefill peak, overhead."""
    counts = _counts(spec)
    fmt = weight_format(setup.weight_format)
    tp, pp = layout.tp, layout.pp
    matrices = _linear_layer_params(counts)
    ends = {"first": counts.embedding_params, "last": counts.output_params}  # embeddings; final norm + head
    rest_bits = fmt.bits_per_weight if fmt.quantizes_embeddings else 16  # bitsandbytes/GPTQ/AWQ keep them 16-bit
    in_layers = counts.total_params - matrices - sum(ends.values())  # norms, routers
    layers_bytes = (matrices * fmt.bits_per_weight + in_layers * rest_bits) / 8
    # Pipeline stages split the layers; the first adds the embeddings, the last the head (the heavier counts).
    if pp == 1:
        weights_bytes = layers_bytes + sum(ends.values()) * rest_bits / 8
    else:
        weights_bytes = layers_bytes / pp + max(ends.values()) * rest_bits / 8
    weights_bytes /= tp

    # An encoder (BERT) reads the whole input in one pass: no cache of keys and values is kept for decoding.
    per_token = 0 if spec.kind == "encoder" else kv_cache_bytes_per_token(spec, setup.kv_dtype, layout)
    sliding = spec.num_sliding_layers
    tokens = setup.batch_size * setup.context_len
    kv_bytes: float = per_token * tokens
    if sliding:
        window_tokens = setup.batch_size * min(setup.context_len, spec.sliding_window or setup.context_len)
        kv_bytes = per_token * (tokens * (spec.num_layers - sliding) + window_tokens * sliding) / spec.num_layers

    # Prefill of the whole prompt at once, under no_grad: one block's transient tensors (residual, its fp32
    # norm upcast, the MLP's gate, up and activation) in bf16, plus fp32 logits for the last position only
    # (generate computes logits_to_keep=1).
    prefill_tokens = setup.batch_size * setup.prefill_tokens
    block_bytes = (_HALF * 2 * spec.hidden_size + _FP32 * spec.hidden_size + _HALF * 3 * _mlp_inner_width(spec)) / tp
    activations_bytes = prefill_tokens * block_bytes
    buffers_bytes = _FP32 * setup.batch_size * spec.vocab_size / tp
    if setup.weight_format in ("int4", "nf4", "int8", "fp8"):
        buffers_bytes += (
            _largest_matrix_params(counts) * _HALF / tp
        )  # one dequantized matrix (bitsandbytes / fallback kernels)
    out = dict.fromkeys(CATEGORIES, 0.0)
    out.update(weights=weights_bytes, kv_cache=kv_bytes, activations=activations_bytes, buffers=buffers_bytes)
    tensors_bytes = sum(out.values())
    out["overhead"] = CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * tensors_bytes
    return MemoryBreakdown({k: round(v) for k, v in out.items()}, peak_phase="inference")
