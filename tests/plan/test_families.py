"""The family table's config defaults are the installed transformers config classes' own."""

from __future__ import annotations

import inspect

import pytest

from lmforge.plan.families import CONFIG_ALIASES, FAMILIES
from lmforge.plan.models import spec_from_config

# Keys whose absence from config.json the table's defaults answer for.
_DEFAULTED = (*CONFIG_ALIASES["num_kv_heads"], *CONFIG_ALIASES["head_dim"], "tie_word_embeddings", "resid_pdrop")
# A width and a head count unlike any class's defaults (384 heads: a multiple of every fixed KV-head default),
# so that "as many KV heads as attention heads" and "hidden // heads" cannot pass for a fixed default.
_HIDDEN, _HEADS = 6144, 384


def _config_class(model_type: str):
    from transformers import CONFIG_MAPPING

    try:  # a lazy mapping: its .get answers None for every key
        return CONFIG_MAPPING[model_type]
    except KeyError:
        return None


def _tie_default(model_type: str, config) -> bool:
    """What the model ties when config.json says nothing: a text config without the field (Qwen2.5-VL's) ties as
    its vision-language wrapper's class does."""
    if hasattr(config, "tie_word_embeddings"):
        return bool(config.tie_word_embeddings)
    wrapper = _config_class(model_type.removesuffix("_text"))
    return bool(wrapper().tie_word_embeddings)


# DistilBertConfig writes dim / n_heads / n_layers, keys the planner does not read yet.
_UNREADABLE = {"distilbert"}


@pytest.mark.parametrize(
    "model_type",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="config keys the planner cannot read"))
        if name in _UNREADABLE
        else name
        for name in FAMILIES
        if _config_class(name) is not None
    ],
)
def test_table_defaults_are_the_transformers_config_class_defaults(model_type: str) -> None:
    """A config.json that leaves out the KV heads, the head width, the embedding tying or the residual dropout gets
    what the transformers config class fills in, read through the planner (plan.models.spec_from_config)."""
    cls = _config_class(model_type)
    accepted = inspect.signature(cls).parameters
    hidden_key = next(key for key in CONFIG_ALIASES["hidden_size"] if key in accepted)
    heads_key = next(key for key in CONFIG_ALIASES["num_attention_heads"] if key in accepted)
    config = cls(**{hidden_key: _HIDDEN, heads_key: _HEADS})
    written = {k: v for k, v in config.to_dict().items() if k not in _DEFAULTED}
    if written.get("num_experts_per_tok", 0) is None:  # DeepseekV2Config leaves it unset; a real config sets it
        written["num_experts_per_tok"] = 2
    spec = spec_from_config({**written, "architectures": [f"{cls.__name__}Model"]}, name=model_type)

    kv_heads = getattr(config, "num_key_value_heads", None) or _HEADS
    head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or _HIDDEN // _HEADS
    facts = FAMILIES[model_type]
    assert spec.num_kv_heads == kv_heads
    if not spec.is_mla:  # DeepSeek's head width is qk_nope_head_dim + qk_rope_head_dim, config fields of its own
        assert spec.head_dim == head_dim
    assert spec.tie_word_embeddings == (facts.always_tied or _tie_default(model_type, config))
    assert facts.resid_dropout == getattr(config, "resid_pdrop", 0.0)
