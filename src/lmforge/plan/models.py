"""Find a model's architecture facts by name or path, without loading any weights.

`resolve_model` accepts a local model directory or config.json, or a catalog name or the hub id a
catalog entry mirrors. `spec_from_config` turns any supported config.json dict into a ModelSpec, and
`spec_from_file` a config.json file. Any other hub id is the hub's to resolve: `lmforge.hub.model_spec`
looks in the Hugging Face cache, then this catalog, then fetches config.json (what `lmforge plan` does),
so the planner stays pure and imports nothing of the hub.

Only json and the standard library at import time: the planner must start in well under 0.5 s, so
torch and transformers are never imported here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, NotFoundError
from lmforge.plan.families import CONFIG_ALIASES, family
from lmforge.plan.spec import ModelKind, ModelSpec

CATALOG_PATH = Path(__file__).parent / "catalog" / "models.json"


def resolve_model(name_or_path: str) -> ModelSpec:
    """The ModelSpec for a local folder or config.json, or a catalog name (or the hub id a catalog entry mirrors).

    Hub ids beyond the catalog: lmforge.hub.model_spec."""
    text = str(name_or_path).strip()
    if not text:
        raise NotFoundError("empty model name; give a catalog name (see `lmforge models`), a hub id or a path")
    path = Path(text).expanduser()
    if path.exists():
        return spec_from_file(_config_file(path), name=text)
    spec = catalog_spec(text)
    if spec is None:
        raise NotFoundError(_unknown_model_message(text))
    return spec


def catalog_spec(name_or_hub_id: str) -> ModelSpec | None:
    """The catalog entry named (or mirroring the hub id) `name_or_hub_id`, ignoring case; None if there is none."""
    entry = _catalog_index().get(name_or_hub_id.strip().lower())
    return _spec_from_entry(entry) if entry is not None else None


def spec_from_file(config_path: Path, name: str, hf_id: str | None = None) -> ModelSpec:
    """Read a config.json file into a ModelSpec (a file that is not JSON, or not an object, is a ConfigError)."""
    return spec_from_config(_read_config(config_path), name=name, hf_id=hf_id, source=str(config_path))


def list_catalog() -> list[ModelSpec]:
    """Every catalog model, in catalog order."""
    return [_spec_from_entry(entry) for entry in _catalog_entries()]


def catalog_licenses() -> dict[str, str]:
    """The licence of every catalog model by name: the hub's license tag of the repository it mirrors."""
    return {entry["name"]: entry.get("license", "") for entry in _catalog_entries()}


def catalog_rows() -> list[dict[str, Any]]:
    """`lmforge models`: one row per catalog model, its size, shape, context and licence (None context: no
    position table, ALiBi)."""
    from lmforge.plan.params import count_params

    licenses = catalog_licenses()
    rows = []
    for spec in list_catalog():
        counts = count_params(spec)
        rows.append(
            {
                "name": spec.name,
                "hf_id": spec.hf_id,
                "architecture": spec.architecture,
                "kind": spec.kind,
                "params_total": counts.total_params,
                "params_active": counts.active_params,
                "layers": spec.num_layers,
                "hidden_size": spec.hidden_size,
                "heads": spec.num_attention_heads,
                "kv_heads": spec.num_kv_heads,
                "context_tokens": spec.max_position_embeddings or None,
                "license": licenses.get(spec.name, ""),
            }
        )
    return rows


def as_sequence_classifier(spec: ModelSpec, num_labels: int = 1) -> ModelSpec:
    """The same model with a sequence-classification head instead of its LM head: a reward model (num_labels=1)
    or a classifier, as AutoModelForSequenceClassification builds it from this config."""
    if num_labels <= 0:
        raise ConfigError(f"num_labels must be positive, got {num_labels}")
    architecture = spec.architecture
    for suffix in ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration", "Model"):
        if architecture.endswith(suffix):
            architecture = architecture[: -len(suffix)] + "ForSequenceClassification"
            break
    labels = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    config = {**spec.config, "architectures": [architecture], "id2label": labels}
    config["label2id"] = {name: int(i) for i, name in labels.items()}
    return dataclasses.replace(spec, architecture=architecture, config=config)


def spec_from_config(config: dict[str, Any], name: str, hf_id: str | None = None, source: str = "") -> ModelSpec:
    """Read a Hugging Face config.json dict into a ModelSpec, naming the field that is missing or invalid."""
    where = source or name
    if not isinstance(config, dict):
        raise ConfigError(f"config.json at {where} is not a JSON object")
    raw = config
    if isinstance(config.get("text_config"), dict) and isinstance(config.get("vision_config"), dict):
        # A vision-language wrapper (Gemma 3 4B+): the layer facts live in text_config; the raw config,
        # vision tower included, stays on the spec (params counts the tower too).
        config = {**config["text_config"], "architectures": config.get("architectures", [])}
        if "tie_word_embeddings" in raw:
            config["tie_word_embeddings"] = raw["tie_word_embeddings"]
    model_type = str(config.get("model_type") or "")
    if not model_type:
        raise ConfigError(f"config.json at {where} is missing 'model_type'")
    fields = _Fields(config, where)
    facts = family(model_type)
    kind: ModelKind = "encoder-decoder" if config.get("is_encoder_decoder") is True else facts.shape

    hidden = fields.int(*CONFIG_ALIASES["hidden_size"])
    heads = fields.int(*CONFIG_ALIASES["num_attention_heads"])
    if facts.shape == "encoder-decoder":
        encoder_layers = fields.int("num_layers", "encoder_layers")
        num_layers = fields.int("num_decoder_layers", "decoder_layers", default=encoder_layers)
    else:
        encoder_layers = 0
        num_layers = fields.int(*CONFIG_ALIASES["num_layers"])
    vocab = fields.int(*CONFIG_ALIASES["vocab_size"])
    kv_heads = fields.int(*CONFIG_ALIASES["num_kv_heads"], default=facts.kv_heads or heads)
    if not fields.problems and (heads == 0 or kv_heads == 0):
        fields.problems.append("'num_attention_heads' and 'num_key_value_heads' must be positive")
    fields.raise_problems()  # the fields below are derived from these
    if config.get("multi_query") is True:
        kv_heads = 1
    if heads % kv_heads != 0:
        raise ConfigError(
            f"config.json at {where}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
        )
    head_dim = fields.int(*CONFIG_ALIASES["head_dim"], default=facts.head_dim or hidden // heads)
    intermediate = fields.int(*CONFIG_ALIASES["intermediate_size"], default=4 * hidden)
    max_positions = fields.int(*CONFIG_ALIASES["max_position_embeddings"], default=0)

    tie = facts.always_tied or bool(config.get("tie_word_embeddings", facts.tie_embeddings))

    num_experts = fields.int(*CONFIG_ALIASES["num_experts"], default=0)
    moe: dict[str, int] = {}
    if num_experts > 0:
        expert_width = fields.int("moe_intermediate_size", default=intermediate)
        shared = fields.int("n_shared_experts", default=0)  # DeepSeek: n copies of an expert-sized MLP
        shared_width = shared * expert_width
        if facts.shared_experts == "qwen2_moe":  # one shared_expert of its own width
            shared_width = fields.int("shared_expert_intermediate_size", default=5632)
            shared = 1 if shared_width else 0
        moe = {
            "num_experts": num_experts,
            "experts_per_token": fields.int(*CONFIG_ALIASES["experts_per_token"]),
            "num_shared_experts": shared,
            "shared_expert_intermediate_size": shared_width,
            "moe_intermediate_size": expert_width,
            "num_moe_layers": len(moe_layer_indices(model_type, config, num_layers)),
        }
    mla: dict[str, int] = {}
    if config.get("kv_lora_rank"):
        mla = {
            "kv_lora_rank": fields.int("kv_lora_rank"),
            "q_lora_rank": fields.int("q_lora_rank", default=0),
            "qk_rope_head_dim": fields.int("qk_rope_head_dim"),
            "qk_nope_head_dim": fields.int("qk_nope_head_dim"),
            "v_head_dim": fields.int("v_head_dim"),
        }
        head_dim = mla["qk_rope_head_dim"] + mla["qk_nope_head_dim"]
    fields.raise_problems()

    window = config.get("sliding_window")
    if config.get("use_sliding_window") is False or not isinstance(window, int) or window <= 0:
        window = None
    sliding_layers = sliding_layer_count(model_type, config, num_layers) if window else 0
    architectures = config.get("architectures") or []
    return ModelSpec(
        name=name,
        model_type=model_type,
        architecture=str(architectures[0]) if architectures else "",
        kind=kind,
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=num_layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        tie_word_embeddings=tie,
        max_position_embeddings=max_positions,
        num_encoder_layers=encoder_layers,
        sliding_window=window,
        num_sliding_layers=sliding_layers,
        hf_id=hf_id,
        config=dict(raw),
        **moe,
        **mla,
    )


def moe_layer_indices(model_type: str, config: dict[str, Any], num_layers: int) -> list[int]:
    """Which decoder layers hold experts, following each architecture's modeling code in transformers."""
    rule = family(model_type).moe_layers
    if rule == "deepseek":
        # DeepseekV2/V3DecoderLayer: MoE when layer_idx >= first_k_dense_replace (transformers ignores moe_layer_freq).
        first_dense = int(config.get("first_k_dense_replace") or 0)
        return [i for i in range(num_layers) if i >= first_dense]
    if rule == "qwen":
        # Qwen3MoeDecoderLayer: experts unless in mlp_only_layers, every decoder_sparse_step-th layer.
        dense_only = set(config.get("mlp_only_layers") or [])
        step = int(config.get("decoder_sparse_step") or 1)
        return [i for i in range(num_layers) if i not in dense_only and (i + 1) % step == 0]
    return list(range(num_layers))


def sliding_layer_count(model_type: str, config: dict[str, Any], num_layers: int) -> int:
    """How many layers use sliding-window attention, by the config's layer_types or transformers' default for it."""
    types = config.get("layer_types")
    if isinstance(types, list) and types:
        return sum(1 for kind in types if kind == "sliding_attention")
    rule = family(model_type).sliding_layers
    if rule == "gemma2":  # Gemma2Config: layers 0, 2, 4, ... slide, the others attend globally
        return (num_layers + 1) // 2
    if rule == "gemma3":  # Gemma3TextConfig: every sliding_window_pattern-th layer is global
        pattern = int(config.get("sliding_window_pattern") or 6)
        return sum(1 for i in range(num_layers) if (i + 1) % pattern)
    if rule == "qwen":  # Qwen2Config: layers from max_window_layers on slide
        return max(num_layers - int(config.get("max_window_layers", num_layers)), 0)
    return num_layers  # Mistral, Mixtral, Phi-3, Starcoder2: one window for every layer


class _Fields:
    """Reads integer fields under their several historical names, collecting every problem at once."""

    def __init__(self, config: dict[str, Any], where: str):
        self.config = config
        self.where = where
        self.problems: list[str] = []

    def int(self, *names: str, default: int | None = None) -> int:
        for key in names:
            value = self.config.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                self.problems.append(f"'{key}' must be a non-negative integer, got {value!r}")
                return 0
            return value
        if default is None:
            self.problems.append(f"missing '{names[0]}'")
            return 0
        return default

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError(f"config.json at {self.where} is invalid: " + "; ".join(self.problems))


def _config_file(path: Path) -> Path:
    if path.is_dir():
        candidate = path / "config.json"
        if not candidate.is_file():
            raise NotFoundError(f"{path} is a directory without a config.json; point at a Hugging Face model folder")
        return candidate
    return path


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config.json at {path}: {exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if path.suffix != ".json":  # a weights file, a GGUF, a README ...
            raise ConfigError(
                f"{path} is not a config.json; pass a Hugging Face model folder or its config.json"
            ) from exc
        where = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise ConfigError(f"config.json at {path} is not valid JSON ({where})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config.json at {path} is not a JSON object")
    return data


@lru_cache(maxsize=1)
def _catalog_entries() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(CATALOG_PATH.read_text(encoding="utf-8"))["models"])


@lru_cache(maxsize=1)
def _catalog_index() -> dict[str, dict[str, Any]]:
    """Lowercased catalog names and hub ids, both mapping to their entry."""
    index: dict[str, dict[str, Any]] = {}
    for entry in _catalog_entries():
        index[entry["name"].lower()] = entry
        index[entry["hf_id"].lower()] = entry
    return index


def _spec_from_entry(entry: dict[str, Any]) -> ModelSpec:
    # A deep copy: a caller editing spec.config (rope_scaling, text_config ...) must not change the catalog.
    config = copy.deepcopy(entry["config"])
    return spec_from_config(config, name=entry["name"], hf_id=entry["hf_id"], source=f"catalog:{entry['name']}")


def close_catalog_names(text: str) -> list[str]:
    """Up to three catalog names close to `text`: the hint an unknown name's error gives."""
    return difflib.get_close_matches(text.lower(), [entry["name"] for entry in _catalog_entries()], n=3, cutoff=0.5)


def _unknown_model_message(text: str) -> str:
    close = close_catalog_names(text)
    hint = f"did you mean {', '.join(close)}?" if close else "see `lmforge models` for the catalog"
    return f"unknown model '{text}': not a local path, a cached hub snapshot or a catalog name; {hint}"
