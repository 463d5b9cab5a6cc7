"""Exact parameter counts from a ModelSpec: total, active (MoE), by component, per layer, trainable.

The counts mirror the modules transformers builds for each architecture (module names included, so
LoRA target names mean the same thing here as in peft). Tests check every catalog entry against
sum(p.numel()) of the meta-device model and LoRA counts against peft.

Pure Python: no torch or transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from lmforge.errors import UserInputError
from lmforge.plan.families import EXACT_MODEL_TYPES, Bias, Mlp, family
from lmforge.plan.models import moe_layer_indices
from lmforge.plan.setup import METHODS, Method, TrainingSetup
from lmforge.plan.spec import ModelSpec

Component = Literal["embeddings", "attention", "mlp", "norms", "head"]
COMPONENTS: tuple[Component, ...] = ("embeddings", "attention", "mlp", "norms", "head")
_DEFAULT = TrainingSetup()  # the method knobs' defaults, the same for the planner and lmforge train


@dataclass(frozen=True)
class Weight:
    """One module's parameters (or one fused expert tensor), named as transformers names it."""

    name: str  # module path inside its block: "self_attn.q_proj", "attn.c_attn", "mlp.experts.gate_up_proj"
    component: Component
    params: int
    in_features: int = 0  # LoRA's view of it: A is in_features × r, B is r × out_features
    out_features: int = 0
    lora: Literal["", "module", "param"] = ""  # peft target_modules (nn.Linear / Conv1D) or target_parameters
    experts: int = 0  # > 0 for a 3-D expert tensor: peft's LoRA rank is multiplied by it
    routed: bool = False  # routed expert weights: only experts_per_token / num_experts of them are active


def _linear(name: str, component: Component, in_features: int, out_features: int, bias: bool = False) -> Weight:
    params = in_features * out_features + (out_features if bias else 0)
    return Weight(name, component, params, in_features, out_features, lora="module")


def _norm(name: str, size: int, bias: bool = False) -> Weight:
    return Weight(name, "norms", size * (2 if bias else 1))


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of one model. embedding + sum(layers) + output == total."""

    total_params: int
    active_params: int  # per token: MoE counts only the top-k routed experts (plus shared experts)
    by_component: dict[str, int]  # embeddings, attention, mlp (dense + experts + router), norms, head
    layer_params: tuple[int, ...]  # every transformer block in execution order (encoder blocks first)
    layer_active_params: tuple[int, ...]
    embedding_params: int  # what the first pipeline stage holds besides its layers (embeddings, their norm)
    output_params: int  # what the last stage holds besides its layers (final norms, untied head, MLM head)
    expert_params: int = 0  # all routed expert weights (a subset of by_component["mlp"])
    # Per block: the weights of its matrices (what quantization stores in 4 bits and AMP casts), and of its
    # routed experts; pipeline stages are priced from their own blocks (DeepSeek's dense first layers are small).
    layer_matrix_params: tuple[int, ...] = ()
    layer_expert_params: tuple[int, ...] = ()
    exact: bool = (
        True  # False: an architecture lmforge does not know, counted as Llama-like (or only its language model)
    )
    weights: tuple[Weight, ...] = field(default=(), repr=False, compare=False)  # the inventory behind the figures
    layer_weights: tuple[tuple[Weight, ...], ...] = field(default=(), repr=False, compare=False)  # weights by block

    @property
    def params_per_layer(self) -> int:
        """The largest block: what one layer costs at most (MoE layers outweigh DeepSeek's dense ones)."""
        return max(self.layer_params, default=0)


def count_params(spec: ModelSpec) -> ParamCount:
    """Exact total, active and per-component counts, mirroring the transformers modules of spec's architecture.

    Cached per spec and raw config (the layout search asks many times): treat the result as read-only.
    """
    return _count_params_cached(spec, json.dumps(spec.config, sort_keys=True, default=str))


@lru_cache(maxsize=512)
def _count_params_cached(spec: ModelSpec, config_key: str) -> ParamCount:
    embedding = _embedding_weights(spec)
    layers = _all_layer_weights(spec)
    output = _output_weights(spec)
    every = [*embedding, *(w for layer in layers for w in layer), *output]

    by_component: dict[str, int] = dict.fromkeys(COMPONENTS, 0)
    for weight in every:
        by_component[weight.component] += weight.params
    layer_params = tuple(sum(w.params for w in layer) for layer in layers)
    layer_active = tuple(sum(_active(spec, w) for w in layer) for layer in layers)
    embedding_params = sum(w.params for w in embedding)
    output_params = sum(w.params for w in output)
    return ParamCount(
        total_params=sum(by_component.values()),
        active_params=embedding_params + sum(layer_active) + output_params,
        by_component=by_component,
        layer_params=layer_params,
        layer_active_params=layer_active,
        embedding_params=embedding_params,
        output_params=output_params,
        expert_params=sum(w.params for w in every if w.routed),
        layer_matrix_params=tuple(sum(w.params for w in layer if _is_block_matrix(w)) for layer in layers),
        layer_expert_params=tuple(sum(w.params for w in layer if w.routed) for layer in layers),
        exact=spec.model_type in EXACT_MODEL_TYPES and (spec.vision_config is None or _vision_known(spec)),
        weights=tuple(every),
        layer_weights=tuple(tuple(layer) for layer in layers),
    )


def _is_block_matrix(weight: Weight) -> bool:
    """A matrix inside a block (attention or MLP projection, experts included): not a norm, bias-only or router."""
    return weight.component in ("attention", "mlp") and bool(weight.in_features)


def default_lora_targets(spec: ModelSpec) -> list[str]:
    """Every linear projection of attention and MLP (LLaMA-Factory's `all`), as peft target_modules names.

    MoE experts are fused 3-D tensors in transformers 5, but peft 0.21 still accepts their transformers-4
    names (gate_proj/up_proj/down_proj, Mixtral's w1/w3/w2) and converts them to the fused tensors, so those
    names are included: "all" keeps meaning attention + every MLP, experts included. The router and the
    output head are never default targets.
    """
    names: list[str] = []
    for layer in _all_layer_weights(spec):
        for weight in layer:
            if weight.lora == "module":
                names.append(weight.name.rpartition(".")[2])
    if spec.is_moe:
        names += [old for old in _PEFT_MOE_RENAMES.get(family(spec.model_type).peft_moe, {}) if old != "gate"]
    return list(dict.fromkeys(names))


def count_trainable_params(
    spec: ModelSpec,
    method: Method | str,
    *,
    lora_r: int = _DEFAULT.lora_r,
    target_modules: list[str] | str | None = None,
    lora_target_parameters: list[str] | None = None,
    trainable_layers: int = _DEFAULT.trainable_layers,
    num_virtual_tokens: int = _DEFAULT.num_virtual_tokens,
) -> int:
    """Trainable parameters for a fine-tuning method, equal to what peft / the trainer would report.

    full: everything. freeze: the last `trainable_layers` blocks, the final norm and an untied head; a tied head
    is the input embedding matrix, so it stays frozen (training it would unfreeze the embeddings).
    lora / qlora: peft LoRA with `target_modules` (default or "all": default_lora_targets;
    "all-linear": peft's keyword) and `lora_target_parameters` as target_parameters.
    prompt: peft prompt tuning's virtual-token embedding. prefix: peft prefix tuning's per-layer key/value prefixes.
    """
    if method not in METHODS:
        raise UserInputError(f"unknown training method '{method}'; choose one of {', '.join(METHODS)}")
    counts = count_params(spec)
    if method == "full":
        return counts.total_params
    if method == "freeze":
        return _freeze_trainable(counts, trainable_layers)
    if method in ("lora", "qlora"):
        adapters = _lora_trainable(spec, counts, lora_r, target_modules, lora_target_parameters)
        # peft's SEQ_CLS task trains a classifier's new score head whole beside the adapters (modules_to_save).
        score = spec.hidden_size * num_labels(spec) if spec.architecture.endswith("ForSequenceClassification") else 0
        return adapters + score
    if num_virtual_tokens <= 0:
        raise UserInputError(f"num_virtual_tokens must be positive, got {num_virtual_tokens}")
    if method == "prompt":
        # peft PromptEmbedding: Embedding(num_virtual_tokens × num_transformer_submodules, token_dim);
        # seq2seq models get 2 submodules (encoder and decoder).
        submodules = 2 if spec.kind == "encoder-decoder" else 1
        return num_virtual_tokens * submodules * spec.hidden_size
    # peft PrefixEncoder: Embedding(num_virtual_tokens, num_layers × 2 × token_dim); since peft #1901, for configs
    # with num_key_value_heads the token_dim is config.head_dim × num_key_value_heads (GQA-sized keys and values).
    # DeepseekV3Config sets head_dim to qk_rope_head_dim, and peft reads that.
    if family(spec.model_type).has_kv_heads_field:
        token_dim = (spec.qk_rope_head_dim if spec.is_mla else spec.head_dim) * spec.num_kv_heads
    else:
        token_dim = spec.hidden_size
    prefix_layers = spec.num_encoder_layers if spec.kind == "encoder-decoder" else spec.num_layers
    return num_virtual_tokens * prefix_layers * 2 * token_dim


def _freeze_trainable(counts: ParamCount, last_n: int) -> int:
    if last_n <= 0 or last_n > len(counts.layer_params):
        raise UserInputError(
            f"trainable_layers must be between 1 and the model's {len(counts.layer_params)} layers, got {last_n}"
        )
    return sum(counts.layer_params[-last_n:]) + counts.output_params


# peft 0.21 (utils/transformers_weight_conversion.py): transformers-4 MoE names in target_modules become
# target_parameters on the fused transformers-5 tensors. Gate and up projections are fused, so they must be
# targeted together and get rank 2r. The names leave target_modules, so dense MLPs with the same names
# (DeepSeek's first dense layers and its shared experts) are then not adapted at all.
_PEFT_MOE_RENAMES: dict[str, dict[str, str]] = {
    "mixtral": {"gate": "gate.weight", "w1": "gate_up_proj", "w3": "gate_up_proj", "w2": "down_proj"},
    "qwen2_moe": {
        "gate": "gate.weight",
        "gate_proj": "gate_up_proj",
        "up_proj": "gate_up_proj",
        "down_proj": "down_proj",
    },
}


def _peft_targets(
    spec: ModelSpec, rank: int, modules: list[str], parameters: list[str]
) -> tuple[list[str], dict[str, int]]:
    """target_modules and {target_parameter: rank} after peft's MoE name conversion."""
    renames = _PEFT_MOE_RENAMES.get(family(spec.model_type).peft_moe)
    ranks = dict.fromkeys(parameters, rank)
    if not renames:
        return modules, ranks
    kept: list[str] = []
    hits: dict[str, set[str]] = {}
    for target in modules:
        old = next((o for o in renames if target == o or target.endswith("." + o)), None)
        if old is None:
            kept.append(target)
            continue
        hits.setdefault(renames[old], set()).add(old)
        ranks.setdefault(renames[old], rank)
    for new_name, olds in hits.items():
        required = {o for o, n in renames.items() if n == new_name}
        if len(required) > 1:
            if olds != required:
                missing = ", ".join(sorted(required - olds))
                raise UserInputError(
                    f"LoRA target(s) {', '.join(sorted(olds))} need {missing} too: peft fuses them into {new_name}"
                )
            ranks[new_name] = rank * len(required)
    return kept, ranks


def _expand_target_keywords(spec: ModelSpec, targets: list[str] | None) -> list[str]:
    """None or "all" (LLaMA-Factory): the default targets. "all-linear" (peft): the same plus, for the MoE
    architectures peft converts, the router (`gate`), which peft's all-linear adds by its transformers-4 name."""
    if not targets or list(targets) == ["all"]:
        return default_lora_targets(spec)
    if list(targets) == ["all-linear"]:
        router = ["gate"] if spec.is_moe and family(spec.model_type).peft_moe else []
        return default_lora_targets(spec) + router
    return list(targets)


def _lora_trainable(
    spec: ModelSpec, counts: ParamCount, rank: int, targets: list[str] | str | None, parameters: list[str] | None
) -> int:
    first, layers, last = lora_params_by_block(spec, rank, targets, parameters)
    return first + sum(layers) + last


def lora_params_by_block(
    spec: ModelSpec, rank: int, targets: list[str] | str | None = None, parameters: list[str] | None = None
) -> tuple[int, tuple[int, ...], int]:
    """peft LoRA parameters before the blocks (a vision tower's), in each block, and after them (a targeted head).

    A pipeline stage holds the adapters of its own blocks; DeepSeek's dense first blocks carry far fewer
    than its MoE blocks, so a share by layer count would misprice them.
    """
    if rank <= 0:
        raise UserInputError(f"lora_r must be positive, got {rank}")
    counts = count_params(spec)
    wanted = _expand_target_keywords(spec, [targets] if isinstance(targets, str) else targets)
    modules, param_ranks = _peft_targets(spec, rank, wanted, list(parameters or []))
    matched: set[str] = set()

    def adapted(weights: tuple[Weight, ...] | list[Weight]) -> int:
        total = 0
        for weight in weights:
            if weight.lora == "module":
                hit = next((t for t in modules if ("." + weight.name).endswith("." + t)), None)
            elif weight.lora == "param":
                hit = next((t for t in param_ranks if ("." + weight.name).endswith("." + t)), None)
            else:
                continue
            if hit is None:
                continue
            matched.add(hit)
            weight_rank = param_ranks[hit] if weight.lora == "param" else rank
            # peft LoRA: A is in×r, B is r×out; a 3-D expert tensor gets r·E (peft ParamWrapper).
            total += weight_rank * max(weight.experts, 1) * (weight.in_features + weight.out_features)
        return total

    n_first = len(_embedding_weights(spec))  # counts.weights is embedding, then every block, then the output
    n_blocks = sum(len(layer) for layer in counts.layer_weights)
    first = adapted(counts.weights[:n_first])
    per_layer = tuple(adapted(layer) for layer in counts.layer_weights)
    last = adapted(counts.weights[n_first + n_blocks :])
    unknown = [t for t in [*modules, *param_ranks] if t not in matched]
    if unknown or first + sum(per_layer) + last == 0:
        available = sorted({w.name.rpartition(".")[2] for w in counts.weights if w.lora == "module"})
        raise UserInputError(
            f"LoRA target(s) {', '.join(unknown) or '(none)'} match no layer of {spec.name}; "
            f"available: {', '.join(available)}"
        )
    return first, per_layer, last


def _active(spec: ModelSpec, weight: Weight) -> int:
    if weight.routed and spec.num_experts:
        return weight.params * spec.experts_per_token // spec.num_experts
    return weight.params


def _bool(spec: ModelSpec, key: str, default: bool = False) -> bool:
    value = spec.text_config.get(key)
    return default if value is None else bool(value)


def _bias(spec: ModelSpec, rule: Bias) -> bool:
    """A family's bias rule (plan.families.Bias): a fixed answer, or the config key it reads with its default."""
    if isinstance(rule, bool):
        return rule
    key, default = rule
    return _bool(spec, key, default)


# ---- architecture inventories (each mirrors the transformers modeling file it names) ----


def _embedding_weights(spec: ModelSpec) -> list[Weight]:
    h, v = spec.hidden_size, spec.vocab_size
    blocks = family(spec.model_type).blocks
    if blocks == "gpt2":  # GPT2Model: wte, wpe
        return [Weight("wte", "embeddings", v * h), Weight("wpe", "embeddings", spec.max_position_embeddings * h)]
    if blocks == "bert":  # BertEmbeddings: word, position, token_type, LayerNorm
        type_vocab = int(spec.config.get("type_vocab_size", 2))
        return [
            Weight("word_embeddings", "embeddings", v * h),
            Weight("position_embeddings", "embeddings", spec.max_position_embeddings * h),
            Weight("token_type_embeddings", "embeddings", type_vocab * h),
            _norm("embeddings.LayerNorm", h, bias=True),
        ]
    if spec.model_type == "bloom":  # BloomModel: word_embeddings and their LayerNorm (ALiBi: no position table)
        return [Weight("word_embeddings", "embeddings", v * h), _norm("word_embeddings_layernorm", h, bias=True)]
    embed = [Weight("embed_in" if spec.model_type == "gpt_neox" else "embed_tokens", "embeddings", v * h)]
    return embed + _vision_weights(spec) if spec.vision_config is not None else embed


def _output_weights(spec: ModelSpec) -> list[Weight]:
    h, v = spec.hidden_size, spec.vocab_size
    facts = family(spec.model_type)
    layer_norm = facts.norm == "layernorm"
    if facts.blocks == "bert":
        return _bert_output(spec)
    if spec.architecture.endswith("ForSequenceClassification"):
        # GenericForSequenceClassification (reward models): the final norm and a bias-free score head, no LM head.
        return [_norm(facts.final_norm, h, bias=layer_norm), _linear("score", "head", h, num_labels(spec))]
    if facts.blocks == "t5":
        out = [_norm("encoder.final_layer_norm", h), _norm("decoder.final_layer_norm", h)]
    else:
        out = [_norm(facts.final_norm, h, bias=layer_norm)]
    head_bias = spec.model_type == "phi"  # PhiForCausalLM: lm_head has a bias, which tying leaves in place
    if not spec.tie_word_embeddings:
        out.append(_linear("lm_head", "head", h, v, bias=head_bias))
    elif head_bias:
        out.append(Weight("lm_head.bias", "head", v))
    return out


def mlp_kind(spec: ModelSpec) -> tuple[Mlp, tuple[str, ...]]:
    """The MLP a model's blocks build and its module names, read by the inventory here and the activation model
    (plan.memory): its family's, except that a T5 config's feed_forward_proj "gated-*" builds
    T5DenseGatedActDense (wi_0, wi_1, wo) in place of T5DenseActDense (wi, wo)."""
    facts = family(spec.model_type)
    if facts.blocks == "t5" and str(spec.config.get("feed_forward_proj", "relu")).startswith("gated-"):
        return "gated", ("wi_0", "wi_1", "wo")
    return facts.mlp, facts.mlp_names


def mlp_activation(spec: ModelSpec) -> str:
    """The MLP's activation function by its transformers ACT2FN name: T5Config derives it from feed_forward_proj
    ("gated-gelu" runs gelu_new), GPT-2 names it activation_function, the rest hidden_act."""
    if family(spec.model_type).blocks == "t5":
        proj = str(spec.config.get("feed_forward_proj", "relu"))
        return "gelu_new" if proj == "gated-gelu" else proj.removeprefix("gated-")
    return str(spec.config.get("activation_function", spec.config.get("hidden_act", "")))


def num_labels(spec: ModelSpec) -> int:
    """A classifier's output width: len(id2label) as transformers computes it, else num_labels, else 2."""
    id2label = spec.text_config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    return int(spec.text_config.get("num_labels") or 2)


def _bert_output(spec: ModelSpec) -> list[Weight]:
    """The head of each BERT / RoBERTa architecture (MLM, sequence classification, or the bare model's pooler)."""
    h, v = spec.hidden_size, spec.vocab_size
    if spec.architecture.endswith("ForSequenceClassification"):
        labels = num_labels(spec)
        if spec.model_type == "roberta":  # RobertaClassificationHead on a pooler-less RobertaModel
            return [
                _linear("classifier.dense", "head", h, h, bias=True),
                _linear("classifier.out_proj", "head", h, labels, bias=True),
            ]
        return [_linear("pooler.dense", "head", h, h, bias=True), _linear("classifier", "head", h, labels, bias=True)]
    if spec.architecture.endswith("ForMaskedLM"):
        # Tied: the decoder's weight is the word embeddings and its bias the head's `bias` (vocab_size).
        # Untied, transformers ties neither: the decoder keeps its own weight and bias besides `bias`.
        head = [_linear("transform.dense", "head", h, h, bias=True), _norm("transform.LayerNorm", h, bias=True)]
        if not spec.tie_word_embeddings:
            head.append(_linear("decoder", "head", h, v, bias=True))
        return [*head, Weight("bias", "head", v)]
    return [_linear("pooler.dense", "head", h, h, bias=True)]


def _all_layer_weights(spec: ModelSpec) -> list[list[Weight]]:
    """The weights of every block, in execution order (encoder blocks first)."""
    blocks = range(spec.num_encoder_layers + spec.num_layers)
    kind = family(spec.model_type).blocks
    if kind == "gpt2":
        return [_gpt2_layer(spec) for _ in blocks]
    if kind == "bert":
        return [_bert_layer(spec) for _ in blocks]
    if kind == "t5":
        return [_t5_layer(spec, index) for index in blocks]
    if kind == "falcon":
        return [_falcon_layer(spec) for _ in blocks]
    moe_layers = set(moe_layer_indices(spec.model_type, spec.text_config, spec.num_layers)) if spec.is_moe else set()
    return [_decoder_layer(spec, index in moe_layers) for index in blocks]


def _gpt2_layer(spec: ModelSpec) -> list[Weight]:
    """GPT2Block: Conv1D projections with biases, LayerNorms with biases."""
    h, i = spec.hidden_size, spec.intermediate_size
    return [
        _norm("ln_1", h, bias=True),
        _linear("attn.c_attn", "attention", h, 3 * h, bias=True),
        _linear("attn.c_proj", "attention", h, h, bias=True),
        _norm("ln_2", h, bias=True),
        _linear("mlp.c_fc", "mlp", h, i, bias=True),
        _linear("mlp.c_proj", "mlp", i, h, bias=True),
    ]


def _falcon_layer(spec: ModelSpec) -> list[Weight]:
    """FalconDecoderLayer / BloomBlock: LayerNorms with bias, one fused query_key_value, a 4h GELU MLP.

    Falcon's new decoder architecture (40B, 180B) has grouped KV heads and two LayerNorms feeding its parallel
    attention and MLP; the original one (7B) one LayerNorm and multi-query attention. BLOOM is sequential with
    biases everywhere."""
    h, d = spec.hidden_size, spec.head_dim
    if spec.model_type == "bloom":
        return [
            _norm("input_layernorm", h, bias=True),
            _linear("self_attention.query_key_value", "attention", h, 3 * h, bias=True),
            _linear("self_attention.dense", "attention", h, h, bias=True),
            _norm("post_attention_layernorm", h, bias=True),
            _linear("mlp.dense_h_to_4h", "mlp", h, spec.intermediate_size, bias=True),
            _linear("mlp.dense_4h_to_h", "mlp", spec.intermediate_size, h, bias=True),
        ]
    bias = _bias(spec, family(spec.model_type).qkv_bias)
    new_architecture = _bool(spec, "new_decoder_architecture")
    if new_architecture and int(spec.text_config.get("num_ln_in_parallel_attn") or 2) == 2:
        norms = [_norm("ln_attn", h, bias=True), _norm("ln_mlp", h, bias=True)]
    else:
        norms = [_norm("input_layernorm", h, bias=True)]
        if not new_architecture and not _bool(spec, "parallel_attn", default=True):
            norms.append(_norm("post_attention_layernorm", h, bias=True))
    qkv = (spec.num_attention_heads + 2 * spec.num_kv_heads) * d
    ffn = int(spec.text_config.get("ffn_hidden_size") or 4 * h)
    return [
        *norms,
        _linear("self_attention.query_key_value", "attention", h, qkv, bias),
        _linear("self_attention.dense", "attention", spec.num_attention_heads * d, h, bias),
        _linear("mlp.dense_h_to_4h", "mlp", h, ffn, bias),
        _linear("mlp.dense_4h_to_h", "mlp", ffn, h, bias),
    ]


def _bert_layer(spec: ModelSpec) -> list[Weight]:
    """BertLayer: self-attention query/key/value, output dense, intermediate and output dense, two LayerNorms."""
    h, i = spec.hidden_size, spec.intermediate_size
    return [
        _linear("attention.self.query", "attention", h, h, bias=True),
        _linear("attention.self.key", "attention", h, h, bias=True),
        _linear("attention.self.value", "attention", h, h, bias=True),
        _linear("attention.output.dense", "attention", h, h, bias=True),
        _norm("attention.output.LayerNorm", h, bias=True),
        _linear("intermediate.dense", "mlp", h, i, bias=True),
        _linear("output.dense", "mlp", i, h, bias=True),
        _norm("output.LayerNorm", h, bias=True),
    ]


def _t5_layer(spec: ModelSpec, index: int) -> list[Weight]:
    """T5Block: self-attention (+ cross-attention in the decoder), a ReLU or gated FF, a T5LayerNorm per sublayer.

    The first block of each stack owns the relative position bias (buckets × heads).
    """
    h, inner, inner_ff = spec.hidden_size, spec.num_attention_heads * spec.head_dim, spec.intermediate_size
    is_decoder = index >= spec.num_encoder_layers
    first_in_stack = index in (0, spec.num_encoder_layers)

    def attention(prefix: str) -> list[Weight]:
        return [
            _linear(prefix + ".q", "attention", h, inner),
            _linear(prefix + ".k", "attention", h, inner),
            _linear(prefix + ".v", "attention", h, inner),
            _linear(prefix + ".o", "attention", inner, h),
        ]

    weights = [*attention("layer.0.SelfAttention"), _norm("layer.0.layer_norm", h)]
    if first_in_stack:
        buckets = int(spec.config.get("relative_attention_num_buckets", 32))
        bias_params = buckets * spec.num_attention_heads
        weights.append(Weight("layer.0.SelfAttention.relative_attention_bias", "attention", bias_params))
    if is_decoder:
        weights += [*attention("layer.1.EncDecAttention"), _norm("layer.1.layer_norm", h)]
    ff_index = 2 if is_decoder else 1
    ff = f"layer.{ff_index}.DenseReluDense."
    *wi, wo = mlp_kind(spec)[1]
    weights += [_linear(ff + name, "mlp", h, inner_ff) for name in wi]
    return [*weights, _linear(ff + wo, "mlp", inner_ff, h), _norm(f"layer.{ff_index}.layer_norm", h)]


def _decoder_layer(spec: ModelSpec, is_moe_layer: bool) -> list[Weight]:
    """Llama-family block: attention, a dense or MoE MLP, and its norms (RMSNorm, or LayerNorm with bias)."""
    h, facts = spec.hidden_size, family(spec.model_type)
    norms = facts.layer_norms
    if spec.model_type == "stablelm" and _bool(spec, "use_parallel_residual"):
        norms = ("input_layernorm",)  # StableLmDecoderLayer: attention and MLP read the same normed input
    weights = [_norm(name, h, bias=facts.norm == "layernorm") for name in norms]
    weights += _mla_attention(spec) if spec.is_mla else _attention(spec)
    if is_moe_layer:
        weights += _moe_mlp(spec)
    else:
        weights += _dense_mlp(spec, spec.intermediate_size)
    return weights


def _attention(spec: ModelSpec) -> list[Weight]:
    h, d, facts = spec.hidden_size, spec.head_dim, family(spec.model_type)
    q_out, kv_out = spec.num_attention_heads * d, spec.num_kv_heads * d
    qkv_bias, o_bias = _bias(spec, facts.qkv_bias), _bias(spec, facts.o_bias)
    if spec.model_type == "gpt_neox":  # GPTNeoXAttention: fused query_key_value and dense
        return [
            _linear("attention.query_key_value", "attention", h, 3 * h, qkv_bias),
            _linear("attention.dense", "attention", h, h, o_bias),
        ]
    if facts.fused_qkv:  # Phi3Attention: one fused qkv_proj
        weights = [_linear("self_attn.qkv_proj", "attention", h, q_out + 2 * kv_out, qkv_bias)]
    else:
        weights = [
            _linear("self_attn.q_proj", "attention", h, q_out, qkv_bias),
            _linear("self_attn.k_proj", "attention", h, kv_out, qkv_bias),
            _linear("self_attn.v_proj", "attention", h, kv_out, qkv_bias),
        ]
    out_name = "self_attn.dense" if spec.model_type == "phi" else "self_attn.o_proj"
    weights.append(_linear(out_name, "attention", q_out, h, o_bias))
    if facts.qk_norm:  # per-head RMSNorm on queries and keys
        weights += [_norm("self_attn.q_norm", d), _norm("self_attn.k_norm", d)]
    elif spec.model_type == "stablelm" and _bool(spec, "qk_layernorm"):  # one bias-free LayerNorm per head
        weights += [_norm("self_attn.q_layernorm", q_out), _norm("self_attn.k_layernorm", kv_out)]
    elif spec.model_type == "gpt_oss":  # GptOssAttention: one learned attention-sink logit per head
        weights.append(Weight("self_attn.sinks", "attention", spec.num_attention_heads))
    elif spec.model_type == "olmo2":  # Olmo2Attention: RMSNorm over all query / key heads together
        weights += [_norm("self_attn.q_norm", q_out), _norm("self_attn.k_norm", kv_out)]
    elif spec.model_type == "phi" and _bool(spec, "qk_layernorm"):
        weights += [_norm("self_attn.q_layernorm", d, bias=True), _norm("self_attn.k_layernorm", d, bias=True)]
    return weights


def _mla_attention(spec: ModelSpec) -> list[Weight]:
    """DeepseekV3Attention: low-rank (LoRA-like) query and joint key/value compression, after DeepSeek-V2 §2.1."""
    h, heads = spec.hidden_size, spec.num_attention_heads
    qk_head = spec.qk_nope_head_dim + spec.qk_rope_head_dim
    bias = _bool(spec, "attention_bias")
    if spec.q_lora_rank:
        weights = [
            _linear("self_attn.q_a_proj", "attention", h, spec.q_lora_rank, bias),
            _norm("self_attn.q_a_layernorm", spec.q_lora_rank),
            _linear("self_attn.q_b_proj", "attention", spec.q_lora_rank, heads * qk_head),
        ]
    else:
        weights = [_linear("self_attn.q_proj", "attention", h, heads * qk_head)]
    return [
        *weights,
        _linear("self_attn.kv_a_proj_with_mqa", "attention", h, spec.kv_lora_rank + spec.qk_rope_head_dim, bias),
        _norm("self_attn.kv_a_layernorm", spec.kv_lora_rank),
        _linear(
            "self_attn.kv_b_proj", "attention", spec.kv_lora_rank, heads * (spec.qk_nope_head_dim + spec.v_head_dim)
        ),
        _linear("self_attn.o_proj", "attention", heads * spec.v_head_dim, h, bias),
    ]


def _dense_mlp(spec: ModelSpec, intermediate: int, prefix: str = "mlp.") -> list[Weight]:
    h, facts = spec.hidden_size, family(spec.model_type)
    bias = _bias(spec, facts.mlp_bias)
    if facts.mlp == "fused-gated":  # Phi3MLP: fused gate_up_proj
        gate_up, down = facts.mlp_names
        return [
            _linear("mlp." + gate_up, "mlp", h, 2 * intermediate, bias),
            _linear("mlp." + down, "mlp", intermediate, h, bias),
        ]
    if facts.mlp == "plain":  # an up and a down matrix (no gate)
        up, down = facts.mlp_names
        return [
            _linear(prefix + up, "mlp", h, intermediate, bias),
            _linear(prefix + down, "mlp", intermediate, h, bias),
        ]
    gate, up, down = facts.mlp_names
    return [
        _linear(prefix + gate, "mlp", h, intermediate, bias),
        _linear(prefix + up, "mlp", h, intermediate, bias),
        _linear(prefix + down, "mlp", intermediate, h, bias),
    ]


def _moe_mlp(spec: ModelSpec) -> list[Weight]:
    """A router (experts × hidden, not an nn.Linear), fused 3-D expert tensors, and any always-on shared experts."""
    h, experts, inter = spec.hidden_size, spec.num_experts, spec.moe_intermediate_size
    if spec.model_type == "gpt_oss":  # GptOssMLP: a router with a bias, experts with biases (GptOssExperts)
        return [
            Weight("mlp.router.weight", "mlp", experts * h, h, experts, lora="param"),
            Weight("mlp.router.bias", "mlp", experts),
            Weight(
                "mlp.experts.gate_up_proj", "mlp", experts * 2 * inter * h, h, 2 * inter, "param", experts, routed=True
            ),
            Weight("mlp.experts.gate_up_proj_bias", "mlp", experts * 2 * inter, routed=True),
            Weight("mlp.experts.down_proj", "mlp", experts * inter * h, inter, h, "param", experts, routed=True),
            Weight("mlp.experts.down_proj_bias", "mlp", experts * h, routed=True),
        ]
    weights = [
        Weight("mlp.gate.weight", "mlp", experts * h, h, experts, lora="param"),
        Weight("mlp.experts.gate_up_proj", "mlp", experts * 2 * inter * h, h, 2 * inter, "param", experts, routed=True),
        Weight("mlp.experts.down_proj", "mlp", experts * inter * h, inter, h, "param", experts, routed=True),
    ]
    if family(spec.model_type).shared_experts == "qwen2_moe" and spec.shared_expert_intermediate_size:
        # Qwen2MoeSparseMoeBlock: shared_expert MLP scaled by a sigmoid shared_expert_gate (hidden → 1).
        weights += _dense_mlp(spec, spec.shared_expert_intermediate_size, prefix="mlp.shared_expert.")
        weights.append(_linear("mlp.shared_expert_gate", "mlp", h, 1))
    elif spec.shared_expert_intermediate_size:
        weights += _dense_mlp(spec, spec.shared_expert_intermediate_size, prefix="mlp.shared_experts.")
    return weights


def _vision_known(spec: ModelSpec) -> bool:
    vision = spec.vision_config or {}
    gemma = vision.get("model_type") == "siglip_vision_model" and spec.config.get("model_type") == "gemma3"
    return gemma or spec.config.get("model_type") == "qwen2_5_vl"


def _vision_weights(spec: ModelSpec) -> list[Weight]:
    """A vision tower and its projector: SigLIP + Gemma3MultiModalProjector, or Qwen2.5-VL's window-attention ViT
    and patch merger.

    The first pipeline stage holds them, so they join the embedding group. Other vision towers are not
    modelled: they count as nothing and ParamCount.exact is False.
    """
    if not _vision_known(spec):
        return []
    if spec.config.get("model_type") == "qwen2_5_vl":
        return _qwen2_5_vl_vision(spec)
    vision = spec.vision_config or {}
    # SiglipVisionConfig defaults where the config leaves a field out.
    h, inner = int(vision.get("hidden_size", 768)), int(vision.get("intermediate_size", 3072))
    layers, channels = int(vision.get("num_hidden_layers", 12)), int(vision.get("num_channels", 3))
    image, patch = int(vision.get("image_size", 224)), int(vision.get("patch_size", 16))
    tower = "vision_tower.vision_model."
    weights = [
        Weight(tower + "embeddings.patch_embedding", "embeddings", channels * patch * patch * h + h),  # Conv2d
        Weight(tower + "embeddings.position_embedding", "embeddings", (image // patch) ** 2 * h),
    ]
    block = [
        _norm(tower + "layer_norm1", h, bias=True),
        *(
            _linear(f"{tower}self_attn.{n}", "attention", h, h, bias=True)
            for n in ("q_proj", "k_proj", "v_proj", "out_proj")
        ),
        _norm(tower + "layer_norm2", h, bias=True),
        _linear(tower + "mlp.fc1", "mlp", h, inner, bias=True),
        _linear(tower + "mlp.fc2", "mlp", inner, h, bias=True),
    ]
    weights += block * layers + [_norm(tower + "post_layernorm", h, bias=True)]
    if vision.get("vision_use_head", True):  # SiglipMultiheadAttentionPoolingHead: probe, attention, norm, MLP
        weights += [
            Weight(tower + "head.probe", "attention", h),
            Weight(
                tower + "head.attention", "attention", 4 * h * h + 4 * h
            ),  # nn.MultiheadAttention, not LoRA-able by name
            _norm(tower + "head.layernorm", h, bias=True),
            _linear(tower + "head.mlp.fc1", "mlp", h, inner, bias=True),
            _linear(tower + "head.mlp.fc2", "mlp", inner, h, bias=True),
        ]
    # Gemma3MultiModalProjector: a vision → text projection matrix (a bare parameter) and an RMSNorm.
    weights += [
        Weight("multi_modal_projector.mm_input_projection_weight", "mlp", h * spec.hidden_size),
        _norm("multi_modal_projector.mm_soft_emb_norm", h),
    ]
    return weights


def _qwen2_5_vl_vision(spec: ModelSpec) -> list[Weight]:
    """Qwen2_5_VisionTransformerPretrainedModel: a bias-free Conv3d patch embedding, RMSNorm blocks with a fused
    qkv and a SwiGLU MLP (biases), and the merger: RMSNorm, then an MLP over 2 x 2 merged patches."""
    vision = spec.vision_config or {}
    # Qwen2_5_VLVisionConfig defaults where the config leaves a field out.
    h, inner = int(vision.get("hidden_size", 1280)), int(vision.get("intermediate_size", 3420))
    depth, channels = int(vision.get("depth", 32)), int(vision.get("in_channels", vision.get("in_chans", 3)))
    patch, temporal = int(vision.get("patch_size", 14)), int(vision.get("temporal_patch_size", 2))
    merged = h * int(vision.get("spatial_merge_size", 2)) ** 2
    out = int(vision.get("out_hidden_size", spec.hidden_size))
    tower = "visual."
    block = [
        _norm(tower + "norm1", h),
        _norm(tower + "norm2", h),
        _linear(tower + "attn.qkv", "attention", h, 3 * h, bias=True),
        _linear(tower + "attn.proj", "attention", h, h, bias=True),
        _linear(tower + "mlp.gate_proj", "mlp", h, inner, bias=True),
        _linear(tower + "mlp.up_proj", "mlp", h, inner, bias=True),
        _linear(tower + "mlp.down_proj", "mlp", inner, h, bias=True),
    ]
    return [
        Weight(tower + "patch_embed.proj", "embeddings", channels * temporal * patch * patch * h),
        *block * depth,
        _norm(tower + "merger.ln_q", h),
        _linear(tower + "merger.mlp.0", "mlp", merged, merged, bias=True),
        _linear(tower + "merger.mlp.2", "mlp", merged, out, bias=True),
    ]
