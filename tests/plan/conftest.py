"""Helpers for the planner's model tests: build catalog configs on the meta device, shrink them for peft."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lmforge.plan.models import spec_from_config
from lmforge.plan.spec import ModelSpec

# Small values for every size field a catalog config may carry; only keys already present are replaced.
_SHRINK = {
    "vocab_size": 256,
    "hidden_size": 64,
    "n_embd": 64,
    "d_model": 64,
    "intermediate_size": 96,
    "d_ff": 96,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 48,
    "num_hidden_layers": 3,
    "n_layer": 2,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_attention_heads": 4,
    "n_head": 4,
    "num_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "d_kv": 16,
    "num_local_experts": 4,
    "num_experts": 4,
    "n_routed_experts": 8,
    "num_experts_per_tok": 2,
    "n_group": 2,
    "topk_group": 1,
    "first_k_dense_replace": 1,
    "kv_lora_rank": 16,
    "q_lora_rank": 24,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 16,
    "v_head_dim": 16,
    "max_position_embeddings": 128,
    "n_positions": 128,
    "sliding_window": 64,
}


def shrink(config: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The same architecture at toy size (a few layers, hidden 64) so real weights build in milliseconds."""
    small = {key: (_SHRINK[key] if key in _SHRINK and value is not None else value) for key, value in config.items()}
    small.pop("rope_scaling", None)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # may lie outside the toy vocabulary
        small[key] = None
    return {**small, **overrides}


def hf_config(spec_or_config: ModelSpec | dict[str, Any]):
    """The transformers config object for a spec's raw config.json dict."""
    from transformers import CONFIG_MAPPING

    config = spec_or_config.config if isinstance(spec_or_config, ModelSpec) else spec_or_config
    return CONFIG_MAPPING[config["model_type"]].from_dict(config)


def build_model(config: dict[str, Any], device: str = "meta"):
    """Instantiate the config's `architectures[0]` class, on the meta device by default (no memory, no weights)."""
    import torch
    import transformers

    model_class = getattr(transformers, config["architectures"][0])
    with torch.device(device):
        return model_class(hf_config(config))


def numel(model) -> int:
    """sum(p.numel()); model.parameters() yields a tied parameter once."""
    return sum(p.numel() for p in model.parameters())


def small_spec(config: dict[str, Any], **overrides: Any) -> ModelSpec:
    small = shrink(config, **overrides)
    return spec_from_config(small, name=f"tiny-{config['model_type']}")


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config dict as <tmp>/<folder>/config.json and return the folder."""

    def write(config: dict[str, Any] | str, folder: str = "model") -> Path:
        path = tmp_path / folder
        path.mkdir(parents=True, exist_ok=True)
        text = config if isinstance(config, str) else json.dumps(config)
        (path / "config.json").write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the hub cache at an empty folder, so a real cache on this machine cannot change what resolves."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache
