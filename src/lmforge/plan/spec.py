"""ModelSpec: the architecture facts the planner needs, read from a Hugging Face config.

One declarative record per model (litgpt-style). Everything the memory, layout and time models
use is a field here, so they never reach into raw config dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ModelKind = Literal["decoder", "encoder", "encoder-decoder"]


@dataclass(frozen=True)
class ModelSpec:
    name: str  # catalog name ("llama-3.1-8b"), or the path / hub id it came from
    model_type: str  # HF config `model_type`: llama, qwen2, qwen3_moe, mixtral, deepseek_v3, gpt2, bert, t5 ...
    architecture: str  # HF `architectures[0]`, e.g. "LlamaForCausalLM"
    kind: ModelKind
    vocab_size: int
    hidden_size: int
    num_layers: int  # decoder layers; for an encoder-only model its encoder layers
    num_attention_heads: int
    num_kv_heads: int  # == heads for MHA, 1 for MQA, in between for GQA
    head_dim: int
    intermediate_size: int  # dense MLP width
    tie_word_embeddings: bool
    max_position_embeddings: int
    num_encoder_layers: int = 0  # encoder-decoder models only
    # Mixture of experts (0 = dense)
    num_experts: int = 0
    experts_per_token: int = 0
    num_shared_experts: int = 0
    moe_intermediate_size: int = 0
    num_moe_layers: int = 0  # how many of num_layers use experts
    shared_expert_intermediate_size: int = 0  # total width of the always-on shared expert(s); 0 = none
    # Multi-head latent attention (DeepSeek-V2/V3); 0 = not MLA
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    sliding_window: int | None = None
    num_sliding_layers: int = 0  # layers that attend only within sliding_window (their KV cache is capped at it)
    hf_id: str | None = None  # the hub id this spec mirrors, when known
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the raw HF config

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def text_config(self) -> dict[str, Any]:
        """The language model's raw config: a multimodal wrapper's `text_config`, else the config itself."""
        text = self.config.get("text_config")
        return text if isinstance(text, dict) and "vision_config" in self.config else self.config

    @property
    def vision_config(self) -> dict[str, Any] | None:
        """A vision-language model's vision tower config (raw), else None."""
        vision = self.config.get("vision_config")
        return vision if isinstance(vision, dict) else None
