"""Preference pairs from a model's own mistakes: chosen = the reference, rejected = what the model said.

Why: DPO and reward models learn most from pairs whose rejected answer the policy actually produces
("on-policy" pairs, as in Iterative Reasoning Preference Optimization, Pang et al. 2024). Hand-made
wrong answers that the policy already ranks last teach it little: after SFT the quickstart's policy
ranked the built-in plausible wrong answer below the correct one in 89-98% of held-out pairs, so DPO
on them could not raise that figure. Only chat data with a reference answer (its last assistant
turn) can be mined, since an answer is judged wrong by exact match against the reference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import UserInputError
from lmforge.evaluate.report import EvalReport
from lmforge.fileio import atomic_write_text


@dataclass
class MinedPairs:
    """The pairs mined from one evaluation, and how many answers were judged."""

    pairs: list[dict[str, Any]]  # canonical preference rows: prompt, chosen, rejected (message lists)
    answers: int  # answers generated and judged (examples too long for the context are not)
    mistakes: int  # answers whose exact match failed
    empty: int  # mistakes with an empty answer: nothing to reject, so no pair

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": len(self.pairs), "answers": self.answers, "mistakes": self.mistakes, "empty": self.empty}


def pairs_from_mistakes(report: EvalReport, records: list[dict[str, Any]]) -> MinedPairs:
    """One preference pair per wrong answer in a generation `report` over `records` (the chat examples
    it was run on, in order): the prompt, the reference as chosen, the model's answer as rejected."""
    from lmforge.data.builtin import prompt_messages

    if report.task != "generation":
        raise UserInputError(f"pairs from mistakes need a generation evaluation, not {report.task}")
    if len(records) != len(report.rows):
        raise UserInputError(f"{len(records)} examples for an evaluation of {len(report.rows)}: not the same data")
    pairs, answers, mistakes, empty = [], 0, 0, 0
    for row in report.rows:
        if row.score is None:  # not run: longer than the context
            continue
        answers += 1
        if row.details["exact_match"]:
            continue
        mistakes += 1
        rejected = row.prediction.strip()
        if not rejected:
            empty += 1
            continue
        pairs.append(
            {
                "prompt": prompt_messages(records[row.index]),
                "chosen": [{"role": "assistant", "content": row.reference}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return MinedPairs(pairs, answers, mistakes, empty)


def write_pairs(mined: MinedPairs, path: str | Path) -> Path:
    """The pairs as preference JSONL (lmforge's canonical schema), written atomically."""
    text = "".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in mined.pairs)
    return atomic_write_text(Path(path), text)


def preference_accuracy(
    model: str, pairs: Sequence[Mapping[str, Any]], *, adapter: str | None = None, device: str | None = None
) -> float | None:
    """Share of `pairs` (canonical preference rows: prompt, chosen, rejected message lists) where `model`
    gives the chosen answer a higher total log-likelihood than the rejected one, each scored after the
    prompt through the model's chat template: the policy's own preference, comparable across training
    stages (the implicit reward DPO raises, Rafailov et al. 2023). None when there are no pairs."""
    import torch

    from lmforge.generate.load import load_model

    if not pairs:
        return None
    loaded = load_model(model, adapter=adapter, device=device)
    tokenizer, network = loaded.tokenizer, loaded.model
    wins = 0
    with torch.inference_mode():
        for pair in pairs:
            prompt_ids = tokenizer(loaded.render_chat(pair["prompt"]), add_special_tokens=False)["input_ids"]
            scores = []
            for answer in (pair["chosen"], pair["rejected"]):
                text = loaded.render_chat(pair["prompt"] + answer, add_generation_prompt=False)
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                logits = network(torch.tensor([ids], device=loaded.device)).logits[0, :-1].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                targets = torch.tensor(ids[1:], device=loaded.device)
                token_logprobs = logprobs.gather(1, targets[:, None])[:, 0]
                scores.append(float(token_logprobs[len(prompt_ids) - 1 :].sum()))
            wins += scores[0] > scores[1]
    return wins / len(pairs)
