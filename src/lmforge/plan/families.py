"""Facts about model families (a config.json's model_type) that more than one reader needs, declared once.

CONFIG_ALIASES: the config keys each architecture fact goes by across families (GPT-2's n_embd, T5's d_model,
ChatGLM's multi_query_group_num ...), in the order they are tried: the planner (plan.models.spec_from_config)
and the inspector (files.inspect) read a config the same way. QK_NORM: families with a per-head RMSNorm on
queries and keys, which the parameter count and the activation memory both price.

Pure data: no imports beyond the standard library.
"""

from __future__ import annotations

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

# Qwen3Attention, Qwen3MoeAttention, Gemma3Attention: q_norm and k_norm over each head's head_dim.
QK_NORM = frozenset({"qwen3", "qwen3_moe", "gemma3_text"})
