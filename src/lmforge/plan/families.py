"""Facts about model families (a config.json's model_type), declared once per family and looked up by name.

litgpt's habit: a model's facts live in one declarative place. `family(model_type)` gives a `Family`: its shape
(decoder, encoder, encoder-decoder), which transformers block it builds, its norm and MLP kind, which projections
carry biases, its MoE style, and the defaults its transformers config class fills in when config.json leaves a
field out. The planner's config reader (plan.models), parameter inventory (plan.params) and activation model
(plan.memory) read these fields instead of naming families of their own; a model_type missing from FAMILIES is
read as a Llama-like decoder (`family` returns DEFAULT_FAMILY), and its count is marked inexact.

What is not here: a one-off quirk of a single family's modeling code (GPT-OSS's attention sinks, Olmo2's
all-heads q/k norm, StableLM's optional parallel residual) stays beside the inventory that mirrors that code in
plan/params.py, next to the transformers class it cites.

CONFIG_ALIASES: the config keys each architecture fact goes by across families (GPT-2's n_embd, T5's d_model,
ChatGLM's multi_query_group_num ...), in the order they are tried: the planner (plan.models.spec_from_config)
and the inspector (files.inspect) read a config the same way.

Pure data: no imports beyond the standard library.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

CONFIG_ALIASES: dict[str, tuple[str, ...]] = {
    "vocab_size": ("vocab_size",),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"),
    "num_kv_heads": ("num_key_value_heads", "multi_query_group_num", "num_kv_heads"),
    "head_dim": ("head_dim", "d_kv"),
    "intermediate_size": ("intermediate_size", "n_inner", "d_ff", "ffn_dim"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "max_seq_len"),
    "num_experts": ("num_local_experts", "n_routed_experts", "num_experts"),
    "experts_per_token": ("num_experts_per_tok", "num_experts_per_token", "moe_topk"),
    "dtype": ("dtype", "torch_dtype"),
    "tie_word_embeddings": ("tie_word_embeddings",),
}

Shape = Literal["decoder", "encoder", "encoder-decoder"]
# Which transformers block plan.params mirrors: LlamaDecoderLayer (and its many descendants), GPT2Block,
# BertLayer, T5Block, FalconDecoderLayer / BloomBlock.
Blocks = Literal["llama", "gpt2", "bert", "t5", "falcon"]
Norm = Literal["rmsnorm", "layernorm"]  # RMSNorm (weight only, fp32 upcast) or nn.LayerNorm (weight and bias)
# gated: gate_proj, up_proj, down_proj (SwiGLU / GeGLU, 3 matrices); fused-gated: one gate_up_proj and down_proj
# (Phi-3); plain: an up and a down matrix (2 matrices, GELU / ReLU).
Mlp = Literal["gated", "fused-gated", "plain"]
# A projection's bias: a fixed answer, or (the config key the modeling code reads, its default when absent).
Bias = bool | tuple[str, bool]
# Which decoder layers hold experts: all of them, DeepSeek's (from first_k_dense_replace on) or Qwen-MoE's
# (every decoder_sparse_step-th layer not in mlp_only_layers).
MoeLayers = Literal["all", "deepseek", "qwen"]
# Always-on shared experts: DeepSeek's n_shared_experts copies of an expert-sized MLP (mlp.shared_experts; none
# when config.json has no n_shared_experts), or Qwen2-MoE's one shared_expert of its own width (config
# shared_expert_intermediate_size, Qwen2MoeConfig's default 5632) with a sigmoid shared_expert_gate.
SharedExperts = Literal["deepseek", "qwen2_moe"]
# How peft 0.21 converts transformers-4 MoE names in target_modules to the fused expert tensors (its
# transformers_weight_conversion, after transformers' conversion_mapping): "" = no conversion.
PeftMoe = Literal["", "mixtral", "qwen2_moe"]
# Which layers use sliding-window attention when config.json has no layer_types: every layer, Gemma 2's
# alternate layers, Gemma 3's all but every sliding_window_pattern-th, or Qwen2's layers from max_window_layers on.
SlidingLayers = Literal["all", "gemma2", "gemma3", "qwen"]


@dataclass(frozen=True)
class Family:
    """One model_type's architecture facts; the defaults describe a Llama block. The comments on FAMILIES' rows
    name the transformers classes they mirror."""

    shape: Shape = "decoder"
    blocks: Blocks = "llama"
    # plan.params counts it exactly (tests check it against sum(p.numel()) of the transformers model); other
    # model types are counted as Llama-like and their ParamCount.exact is False.
    exact: bool = False
    # The config class's defaults where config.json leaves a field out (None: hidden / heads, and as many KV
    # heads as attention heads). PretrainedConfig ties the embeddings unless the class says otherwise.
    head_dim: int | None = None
    kv_heads: int | None = None
    tie_embeddings: bool = True
    always_tied: bool = False  # T5: the LM head is the shared embedding whatever config.json says
    resid_dropout: float = 0.0  # config resid_pdrop's default (GPT2Config: 0.1)
    norm: Norm = "rmsnorm"
    # The per-layer norms of a Llama-style block, and the final norm's name.
    layer_norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    final_norm: str = "norm"
    qk_norm: bool = False  # Qwen3 / Gemma 3: q_norm and k_norm, an RMSNorm over each head's head_dim
    qkv_bias: Bias = ("attention_bias", False)
    o_bias: Bias = ("attention_bias", False)
    fused_qkv: bool = False  # one qkv_proj (Phi-3); GPT-2, GPT-NeoX and Falcon fuse it in their own blocks
    mlp: Mlp = "gated"
    mlp_names: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")
    mlp_bias: Bias = False
    moe_layers: MoeLayers = "all"
    shared_experts: SharedExperts = "deepseek"
    peft_moe: PeftMoe = ""
    sliding_layers: SlidingLayers = "all"

    @property
    def has_kv_heads_field(self) -> bool:
        """Whether the config class has num_key_value_heads (peft's prefix tuning reads it): GPT-2, BERT and
        T5 configs do not."""
        return self.blocks not in ("gpt2", "bert", "t5")


# An unknown model_type: a Llama-like decoder that reads Llama's config.mlp_bias, counted as inexact.
DEFAULT_FAMILY = Family(mlp_bias=("mlp_bias", False))

_GEMMA2_NORMS = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)
# BertLayer: LayerNorms and projections with biases. T5Block: bias-free, T5LayerNorm (an RMSNorm); its MLP is
# plain (ReLU) or gated by config feed_forward_proj, which plan.params reads.
_BERT = Family(
    shape="encoder",
    blocks="bert",
    exact=True,
    norm="layernorm",
    qkv_bias=True,
    o_bias=True,
    mlp="plain",
    mlp_names=("intermediate.dense", "output.dense"),
    mlp_bias=True,
)
_T5 = Family(
    shape="encoder-decoder",
    blocks="t5",
    head_dim=64,  # T5Config.d_kv, whatever d_model and num_heads are
    always_tied=True,
    qkv_bias=False,
    o_bias=False,
    mlp="plain",
    mlp_names=("wi", "wo"),
)
_ENCODER = Family(shape="encoder", mlp_bias=("mlp_bias", False))
_ENCODER_DECODER = Family(shape="encoder-decoder", mlp_bias=("mlp_bias", False))

FAMILIES: dict[str, Family] = {
    # LlamaAttention / LlamaMLP: biases by config.attention_bias and config.mlp_bias.
    "llama": Family(exact=True, tie_embeddings=False, mlp_bias=("mlp_bias", False)),
    # MistralAttention / MixtralAttention: bias-free projections whatever config.attention_bias says.
    "mistral": Family(exact=True, tie_embeddings=False, kv_heads=8, qkv_bias=False, o_bias=False),
    "mixtral": Family(exact=True, tie_embeddings=False, kv_heads=8, qkv_bias=False, o_bias=False, peft_moe="mixtral"),
    # Qwen2Attention: q/k/v bias=True, o_proj bias=False.
    "qwen2": Family(exact=True, tie_embeddings=False, kv_heads=32, qkv_bias=True, o_bias=False, sliding_layers="qwen"),
    # Qwen2_5_VLTextConfig: 8 KV heads; it has no tie_word_embeddings, its wrapper Qwen2_5_VLConfig unties.
    "qwen2_5_vl_text": Family(exact=True, tie_embeddings=False, kv_heads=8, qkv_bias=True, o_bias=False),
    # Qwen2MoeAttention: q/k/v bias=config.qkv_bias; Qwen2MoeSparseMoeBlock: one shared_expert of its own width.
    # Absent from transformers' conversion_mapping, so peft converts none of its expert names.
    "qwen2_moe": Family(
        exact=True,
        tie_embeddings=False,
        kv_heads=16,
        qkv_bias=("qkv_bias", True),
        o_bias=False,
        moe_layers="qwen",
        shared_experts="qwen2_moe",
        sliding_layers="qwen",
    ),
    "qwen3": Family(exact=True, tie_embeddings=False, head_dim=128, kv_heads=32, qk_norm=True, sliding_layers="qwen"),
    # Qwen3MoeConfig has no head_dim: Qwen3MoeAttention falls back to hidden_size // num_attention_heads.
    "qwen3_moe": Family(
        exact=True,
        tie_embeddings=False,
        kv_heads=4,
        qk_norm=True,
        moe_layers="qwen",
        peft_moe="qwen2_moe",
    ),
    # DeepseekV2MLP reads config.mlp_bias (V3's does not); both put n_shared_experts beside the routed ones.
    "deepseek_v2": Family(
        exact=True,
        tie_embeddings=False,
        mlp_bias=("mlp_bias", False),
        moe_layers="deepseek",
        shared_experts="deepseek",
        peft_moe="qwen2_moe",
    ),
    "deepseek_v3": Family(
        exact=True,
        tie_embeddings=False,
        kv_heads=128,
        moe_layers="deepseek",
        shared_experts="deepseek",
        peft_moe="qwen2_moe",
    ),
    "olmoe": Family(tie_embeddings=False, peft_moe="qwen2_moe", mlp_bias=("mlp_bias", False)),
    "gemma": Family(exact=True, head_dim=256, kv_heads=16),
    "gemma2": Family(exact=True, head_dim=256, kv_heads=4, layer_norms=_GEMMA2_NORMS, sliding_layers="gemma2"),
    "gemma3_text": Family(
        exact=True, head_dim=256, kv_heads=4, layer_norms=_GEMMA2_NORMS, qk_norm=True, sliding_layers="gemma3"
    ),
    # Phi3Attention: one fused qkv_proj, bias-free; Phi3MLP: one fused gate_up_proj.
    "phi3": Family(
        exact=True,
        tie_embeddings=False,
        qkv_bias=False,
        o_bias=False,
        fused_qkv=True,
        mlp="fused-gated",
        mlp_names=("gate_up_proj", "down_proj"),
    ),
    # PhiDecoderLayer: parallel attention and MLP behind one LayerNorm, every projection with a bias.
    "phi": Family(
        exact=True,
        tie_embeddings=False,
        norm="layernorm",
        layer_norms=("input_layernorm",),
        final_norm="final_layernorm",
        qkv_bias=True,
        o_bias=True,
        mlp="plain",
        mlp_names=("fc1", "fc2"),
        mlp_bias=("use_bias", True),
    ),
    # GPTNeoXAttention: a fused query_key_value and dense, bias=config.attention_bias (default True).
    "gpt_neox": Family(
        exact=True,
        tie_embeddings=False,
        norm="layernorm",
        final_norm="final_layer_norm",
        qkv_bias=("attention_bias", True),
        o_bias=("attention_bias", True),
        mlp="plain",
        mlp_names=("dense_h_to_4h", "dense_4h_to_h"),
        mlp_bias=("use_bias", True),
    ),
    # Olmo2DecoderLayer: norms after attention and after the MLP only.
    "olmo2": Family(
        exact=True, tie_embeddings=False, layer_norms=("post_attention_layernorm", "post_feedforward_layernorm")
    ),
    # Starcoder2Attention / Starcoder2MLP: bias=config.use_bias (default True).
    "starcoder2": Family(
        exact=True,
        kv_heads=2,
        norm="layernorm",
        qkv_bias=("use_bias", True),
        o_bias=("use_bias", True),
        mlp="plain",
        mlp_names=("c_fc", "c_proj"),
        mlp_bias=("use_bias", True),
    ),
    # StableLmAttention: q/k/v bias=config.use_qkv_bias, o_proj bias=False.
    "stablelm": Family(
        exact=True,
        tie_embeddings=False,
        kv_heads=32,
        norm="layernorm",
        qkv_bias=("use_qkv_bias", False),
        o_bias=False,
    ),
    "gpt_oss": Family(exact=True, tie_embeddings=False, head_dim=64, kv_heads=8),
    # GPT2Block: Conv1D projections and LayerNorms, all with biases.
    "gpt2": Family(
        exact=True,
        blocks="gpt2",
        resid_dropout=0.1,
        norm="layernorm",
        final_norm="ln_f",
        qkv_bias=True,
        o_bias=True,
        mlp="plain",
        mlp_names=("c_fc", "c_proj"),
        mlp_bias=True,
    ),
    # FalconDecoderLayer: every projection's bias=config.bias; BloomBlock: biases everywhere.
    "falcon": Family(
        exact=True,
        blocks="falcon",
        norm="layernorm",
        final_norm="ln_f",
        qkv_bias=("bias", False),
        o_bias=("bias", False),
        mlp="plain",
        mlp_names=("dense_h_to_4h", "dense_4h_to_h"),
        mlp_bias=("bias", False),
    ),
    "bloom": Family(
        exact=True,
        blocks="falcon",
        norm="layernorm",
        final_norm="ln_f",
        qkv_bias=True,
        o_bias=True,
        mlp="plain",
        mlp_names=("dense_h_to_4h", "dense_4h_to_h"),
        mlp_bias=True,
    ),
    "bert": _BERT,
    "roberta": _BERT,
    "t5": dataclasses.replace(_T5, exact=True),
    "mt5": _T5,
    "umt5": _T5,
    # Shapes known, blocks not modelled: counted as Llama-like (inexact).
    "distilbert": _ENCODER,
    "electra": _ENCODER,
    "xlm-roberta": _ENCODER,
    "deberta": _ENCODER,
    "deberta-v2": _ENCODER,
    "bart": _ENCODER_DECODER,
    "mbart": _ENCODER_DECODER,
    "pegasus": _ENCODER_DECODER,
    "marian": _ENCODER_DECODER,
}

# Architectures whose counts the tests check against transformers; others are counted as Llama-like.
EXACT_MODEL_TYPES = frozenset(name for name, facts in FAMILIES.items() if facts.exact)


def family(model_type: str) -> Family:
    """The facts of a model_type; an unknown one is read as a Llama-like decoder (DEFAULT_FAMILY)."""
    return FAMILIES.get(model_type, DEFAULT_FAMILY)
