"""Why this token? Each sampling stage's effect on the next-token distribution, made visible.

The five steps of transformers' sampling, live: (1) the model's distribution, (2) temperature reshapes it,
(3) top-k keeps the k most likely, (4) top-p keeps the smallest set reaching p within those,
(5) the survivors are renormalised and one is drawn. Every stage is computed by the very
transformers processor objects that `SamplingParams.logits_processors()` hands to `generate`,
applied in the same order, so what is shown is what was sampled from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmforge.generate.sampling import SamplingParams


@dataclass
class StageMasks:
    """Per-vocabulary results of the sampling stages for one step (torch tensors of shape [vocab])."""

    probs_temperature: Any  # softmax after repetition penalty and temperature
    kept: dict[str, Any]  # stage name ("top_k", "top_p", "min_p") -> bool mask after that stage
    final_probs: Any  # renormalised distribution actually sampled from (greedy: one-hot on the argmax)


@dataclass
class Candidate:
    token_id: int
    token: str
    prob_temperature: float
    kept: dict[str, bool]  # stage -> survived it (only the stages that are on)
    final_prob: float
    chosen: bool


@dataclass
class StepExplanation:
    step: int
    chosen_id: int
    chosen_token: str
    kept_counts: dict[str, int]  # tokens left after each stage, starting from the whole vocabulary
    candidates: list[Candidate] = field(default_factory=list)


def stage_masks(
    logits: Any, params: SamplingParams, input_ids: Any | None = None, prompt_length: int = 0
) -> StageMasks:
    """Apply params' processors one at a time to `logits` ([vocab] or [1, vocab]) and record each stage.

    `input_ids` ([1, seq]) is needed only for the penalties, which look at the text so far (the presence
    and frequency penalties at the part after `prompt_length`).
    """
    import torch
    from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    filters = {TopKLogitsWarper: "top_k", TopPLogitsWarper: "top_p", MinPLogitsWarper: "min_p"}
    scores = logits.reshape(1, -1).float().clone()
    ids = input_ids if input_ids is not None else torch.zeros((1, 0), dtype=torch.long)
    probs_temperature = torch.softmax(scores[0], dim=-1)
    kept: dict[str, Any] = {}
    for processor in params.logits_processors(prompt_length):
        scores = processor(ids, scores)
        name = filters.get(type(processor))
        if name:
            kept[name] = torch.isfinite(scores[0])
        else:  # penalties or temperature: they come before every filter
            probs_temperature = torch.softmax(scores[0], dim=-1)
    if params.is_greedy:
        final = torch.zeros_like(probs_temperature)
        final[int(torch.argmax(scores[0]))] = 1.0
        return StageMasks(probs_temperature, {}, final)
    return StageMasks(probs_temperature, kept, torch.softmax(scores[0], dim=-1))


def explain_steps(
    step_logits: Any, sequences: Any, prompt_tokens: int, params: SamplingParams, tokenizer: Any, *, top: int = 10
) -> list[StepExplanation]:
    """One StepExplanation per generated token from generate's raw `output.logits`."""
    import torch

    explanations = []
    for step, logits in enumerate(step_logits):
        position = prompt_tokens + step
        if position >= sequences.shape[1]:
            break
        chosen = int(sequences[0, position])
        masks = stage_masks(logits[0], params, sequences[:, :position], prompt_tokens)
        order = torch.argsort(masks.probs_temperature, descending=True)[:top].tolist()
        if chosen not in order:
            order.append(chosen)
        counts = {"vocabulary": int(masks.probs_temperature.shape[0])}
        counts.update({name: int(mask.sum()) for name, mask in masks.kept.items()})
        candidates = [
            Candidate(
                token_id=token_id,
                token=tokenizer.decode([token_id]),
                prob_temperature=float(masks.probs_temperature[token_id]),
                kept={name: bool(mask[token_id]) for name, mask in masks.kept.items()},
                final_prob=float(masks.final_probs[token_id]),
                chosen=token_id == chosen,
            )
            for token_id in order
        ]
        explanations.append(StepExplanation(step, chosen, tokenizer.decode([chosen]), counts, candidates))
    return explanations
