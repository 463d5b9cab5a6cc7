"""Structured pruning of whole attention heads (`lmforge compress prune --structure heads`).

A decoder with grouped-query attention has `num_key_value_heads` KV heads, each shared by
n_rep = num_attention_heads / num_key_value_heads consecutive query heads (transformers' `repeat_kv`:
query head h reads KV head h // n_rep). transformers builds every layer from one config, so the
same number of heads must go in every layer, and the heads left must still form equal groups. Two
units keep that true, and the one whose share is nearest to `--sparsity` is used (a tie goes to
whole groups, which also shrink k/v and the KV cache):
- group: a KV head together with its n_rep query heads (q, k, v and o all shrink; shares k/G);
- query: the same number of query heads inside every group (q and o shrink; shares r/n_rep).
Which heads go is chosen per layer by score:
- magnitude: ‖O_h‖·‖Q_h‖·‖K_g‖·‖V_g‖, the Frobenius norms of the head's o_proj columns and q rows and
  of its KV head's k and v rows;
- wanda: Σ_j ‖O[:, j]‖₂·‖X_j‖₂ over the head's o_proj input features j, X_j being the head's output
  on the calibration tokens (Sun et al. 2023's score, summed over the head as the MLP path sums a channel).
A group scores the sum of its heads. The config is rewritten with num_attention_heads,
num_key_value_heads and an explicit head_dim (hidden_size / num_attention_heads no longer gives it),
so `AutoModelForCausalLM.from_pretrained` reloads the smaller model as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmforge.errors import UserInputError

# Attention that is q/k/v/o projections over per-head slices and nothing else per head (Qwen2's q/k/v
# biases are sliced with their rows; Qwen3's q/k norms act on head_dim, shared by every head).
HEAD_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class HeadPlan:
    """Which heads every layer keeps: query and KV head indices, sorted, the same counts in each layer."""

    unit: str  # "group" or "query"
    heads: int  # query heads per layer before
    keep_query: list[list[int]]
    keep_kv: list[list[int]]

    @property
    def removed(self) -> int:
        return self.heads - len(self.keep_query[0])

    def note(self) -> str:
        kept, kv = len(self.keep_query[0]), len(self.keep_kv[0])
        what = "whole KV groups" if self.unit == "group" else "query heads inside every KV group"
        return (
            f"attention heads kept per layer: {kept} of {self.heads} ({kv} KV heads), removing {what}; "
            "num_attention_heads, num_key_value_heads and head_dim rewritten, the file and the model shrink"
        )


def attention_outputs(model: Any) -> dict[str, Any]:
    """Each decoder layer's o_proj by name (whose inputs are the heads' outputs); refuses other families."""
    family = getattr(model.config, "model_type", "unknown")
    layers = getattr(getattr(model, "model", None), "layers", None)
    if family not in HEAD_FAMILIES or layers is None:
        raise UserInputError(
            f"--structure heads supports {', '.join(HEAD_FAMILIES)} decoders; this model is {family!r}"
        )
    return {f"model.layers.{i}.self_attn.o_proj": layer.self_attn.o_proj for i, layer in enumerate(layers)}


def head_scores(model: Any, norms: dict[str, Any] | None = None) -> list[Any]:
    """One score per query head per layer: magnitude without `norms`, Wanda with o_proj's input norms."""
    config = model.config
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, _head_dim(config)
    scores = []
    for i, layer in enumerate(model.model.layers):
        attention = layer.self_attn
        output = attention.o_proj.weight.detach().float()  # (hidden, heads · dim): head h owns columns h·dim…
        if norms is not None:
            features = output.norm(dim=0) * norms[f"model.layers.{i}.self_attn.o_proj"]
            scores.append(features.reshape(heads, dim).sum(dim=1))
            continue
        query = _row_norms(attention.q_proj, heads)
        kv = _row_norms(attention.k_proj, kv_heads) * _row_norms(attention.v_proj, kv_heads)
        scores.append(output.reshape(-1, heads, dim).norm(dim=(0, 2)) * query * kv.repeat_interleave(heads // kv_heads))
    return scores


def choose_heads(
    scores: list[Any], kv_heads: int, sparsity: float, loadable: Callable[[int, int], bool] | None = None
) -> HeadPlan:
    """The unit and count whose share of query heads is nearest `sparsity` (ties: the smaller share, then
    whole groups) among those `loadable(query_heads, kv_heads)` accepts, then the best heads per layer."""
    heads = len(scores[0])
    per_group = heads // kv_heads
    # (share of query heads removed, unit, count removed, query heads left, KV heads left); k = 0 removes nothing
    options = [(k / kv_heads, "group", k, heads - k * per_group, kv_heads - k) for k in range(kv_heads)]
    options += [(r / per_group, "query", r, heads - r * kv_heads, kv_heads) for r in range(1, per_group)]
    options = [option for option in options if not option[2] or loadable is None or loadable(*option[3:])]
    # nearest share; ties: the smaller share, then "group" before "query"
    _, unit, count, _, _ = min(options, key=lambda option: (abs(option[0] - sparsity), option[0], option[1]))
    if count == 0:
        possible = sorted({f"{option[0]:g}" for option in options if option[2]}) or ["none"]
        raise UserInputError(
            f"--sparsity {sparsity} removes no attention head: this model's heads come off in shares of "
            f"{', '.join(possible)} (the same count in every layer, whole KV groups or equal heads per group, "
            "and a config transformers accepts)"
        )
    keep_query, keep_kv = [], []
    for layer in scores:
        groups = layer.reshape(kv_heads, per_group)
        if unit == "group":
            kv = sorted(groups.sum(dim=1).topk(kv_heads - count).indices.tolist())
            query = [g * per_group + j for g in kv for j in range(per_group)]
        else:
            kv = list(range(kv_heads))
            best = groups.topk(per_group - count, dim=1).indices.sort(dim=1).values
            query = [g * per_group + int(j) for g in kv for j in best[g]]
        keep_query.append(query)
        keep_kv.append(kv)
    return HeadPlan(unit, heads, keep_query, keep_kv)


def remove_heads(model: Any, keep_query: list[list[int]], keep_kv: list[list[int]]) -> None:
    """Keep only the listed query and KV heads in every layer (rows of q/k/v, columns of o) and rewrite
    the config; every kept query head's KV head must be kept, in equal groups, with the same counts per layer."""
    import torch

    config = model.config
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, _head_dim(config)
    per_group = heads // kv_heads
    new_heads, new_kv = len(keep_query[0]), len(keep_kv[0])
    for query, kv in zip(keep_query, keep_kv, strict=True):
        groups = [h // per_group for h in query]
        if (
            len(query) != new_heads
            or len(set(query)) != new_heads
            or len(kv) != new_kv
            or sorted(set(groups)) != sorted(kv)
            or any(groups.count(g) != new_heads // new_kv for g in kv)
        ):
            raise ValueError(f"heads {query} with KV heads {kv} do not form equal groups in every layer")

    def rows(indices: list[int]) -> Any:
        return torch.tensor([h * dim + j for h in sorted(indices) for j in range(dim)])

    with torch.no_grad():
        for layer, query, kv in zip(model.model.layers, keep_query, keep_kv, strict=True):
            attention = layer.self_attn
            for name, index, axis in (
                ("q_proj", rows(query), 0),
                ("k_proj", rows(kv), 0),
                ("v_proj", rows(kv), 0),
                ("o_proj", rows(query), 1),
            ):
                setattr(attention, name, sliced_linear(getattr(attention, name), index, axis))
            attention.num_key_value_groups = new_heads // new_kv  # read by transformers' attention functions
    config.head_dim = dim
    config.num_attention_heads = new_heads
    config.num_key_value_heads = new_kv


def prune_heads(model: Any, sparsity: float, norms: dict[str, Any] | None = None) -> HeadPlan:
    """Score, choose and remove heads (Wanda when o_proj's input norms are given); returns what was kept."""
    from huggingface_hub.errors import StrictDataclassError

    attention_outputs(model)
    config = model.config

    def loadable(heads: int, kv_heads: int) -> bool:
        # from_pretrained validates the config as it builds it (LlamaConfig: hidden_size % heads == 0)
        changed = {"num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": _head_dim(config)}
        try:
            type(config).from_dict({**config.to_dict(), **changed})
        except (StrictDataclassError, ValueError, TypeError):
            return False
        return True

    plan = choose_heads(head_scores(model, norms), config.num_key_value_heads, sparsity, loadable)
    remove_heads(model, plan.keep_query, plan.keep_kv)
    return plan


def sliced_linear(old: Any, index: Any, axis: int) -> Any:
    """A new nn.Linear holding `old`'s output rows (axis 0) or input columns (axis 1) at `index`."""
    import torch

    kept = len(index)
    new = torch.nn.Linear(
        old.in_features if axis == 0 else kept,
        kept if axis == 0 else old.out_features,
        bias=old.bias is not None,
        dtype=old.weight.dtype,
        device=old.weight.device,
    )
    with torch.no_grad():
        new.weight.copy_(old.weight.index_select(axis, index.to(old.weight.device)))
        if old.bias is not None:
            new.bias.copy_(old.bias if axis == 1 else old.bias[index])
    return new


def _row_norms(linear: Any, count: int) -> Any:
    """Frobenius norm of each of `count` equal blocks of output rows (one block per head)."""
    return linear.weight.detach().float().reshape(count, -1).norm(dim=1)


def _head_dim(config: Any) -> int:
    # transformers' Llama/Qwen attention: getattr(config, "head_dim", hidden_size // num_attention_heads)
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
