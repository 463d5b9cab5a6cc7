import math

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lmforge.generate.explain import stage_masks
from lmforge.generate.generation import generate
from lmforge.generate.sampling import SamplingParams


def _chain(logits, temperature, top_k, top_p, min_p):
    """transformers' warpers in its documented order, built here independently of lmforge."""
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    if min_p > 0:
        warpers.append(MinPLogitsWarper(min_p))
    return warpers(torch.zeros((1, 0), dtype=torch.long), logits.reshape(1, -1).clone())[0]


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "min_p"),
    [
        (0.8, 36, 0.7, 0.0),
        (1.2, 50, 0.9, 0.0),
        (0.3, 20, 0.5, 0.0),
        (1.0, 0, 0.95, 0.1),
        (0.5, 5, 1.0, 0.0),
        (1.5, 0, 1.0, 0.2),
    ],
)
def test_kept_set_and_renormalised_probs_equal_transformers_warpers(temperature, top_k, top_p, min_p):
    generator = torch.Generator().manual_seed(hash((temperature, top_k, top_p, min_p)) % 2**31)
    for _ in range(5):
        logits = torch.randn(500, generator=generator) * 3
        masks = stage_masks(logits, SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p))
        reference = _chain(logits, temperature, top_k, top_p, min_p)
        final_kept = torch.isfinite(reference)
        last_stage = list(masks.kept.values())[-1] if masks.kept else torch.ones(500, dtype=torch.bool)
        assert torch.equal(last_stage, final_kept)
        assert torch.equal(masks.final_probs, torch.softmax(reference, dim=-1))
        assert torch.allclose(masks.probs_temperature, torch.softmax(logits / temperature, dim=-1))
        if top_k:  # the stage after top-k alone
            assert torch.equal(masks.kept["top_k"], torch.isfinite(_chain(logits, temperature, top_k, 1.0, 0.0)))


def test_seed_five_step_example():
    """The tutorials: T=0.8, top-k 36, top-p 0.7 keeps "about 15-20" words, then renormalises.

    The scores are a Zipf-like distribution over 1,000 words (logit = -0.4 ln rank); after temperature
    0.8 the weights are rank^-0.5, so the 36 survivors of top-k reach 0.7 at the 20th word (0.694 after 19, 0.715 after 20).
    """
    logits = -0.4 * torch.log(torch.arange(1, 1001, dtype=torch.float32))
    masks = stage_masks(logits, SamplingParams(temperature=0.8, top_k=36, top_p=0.7))
    # step 2: temperature 0.8 sharpens (exponent 0.4 / 0.8 = 0.5)
    weights = torch.arange(1, 1001, dtype=torch.float64) ** -0.5
    assert torch.allclose(masks.probs_temperature.double(), weights / weights.sum(), atol=1e-6)
    # step 3: top-k keeps exactly the 36 most likely
    assert int(masks.kept["top_k"].sum()) == 36 and bool(masks.kept["top_k"][:36].all())
    # step 4: top-p within those 36: the smallest prefix whose renormalised mass reaches 0.7
    top36 = weights[:36] / weights[:36].sum()
    expected = int((torch.cumsum(top36, 0) < 0.7).sum()) + 1
    kept = int(masks.kept["top_p"].sum())
    assert kept == expected == 20
    assert 15 <= kept <= 20
    # step 5: survivors renormalised, nobody else can be drawn
    final = masks.final_probs.double()
    assert math.isclose(float(final.sum()), 1.0, rel_tol=1e-6)
    assert torch.allclose(final[:kept], weights[:kept] / weights[:kept].sum(), atol=1e-6)
    assert float(final[kept:].sum()) == 0.0


def test_greedy_explanation_is_one_hot_on_the_argmax():
    logits = torch.randn(100, generator=torch.Generator().manual_seed(3))
    masks = stage_masks(logits, SamplingParams(temperature=0))
    assert int(masks.final_probs.argmax()) == int(logits.argmax()) and float(masks.final_probs.max()) == 1.0


def test_explain_during_generation_accounts_for_every_token(loaded):
    params = SamplingParams(temperature=0.9, top_k=10, top_p=0.8, max_new_tokens=6, seed=4)
    result = generate(loaded, "Sort the numbers", params, explain=True, explain_top=5)
    assert len(result.steps) == result.completion_tokens
    for step, token_id in zip(result.steps, result.token_ids):
        assert step.chosen_id == token_id
        chosen = [c for c in step.candidates if c.chosen]
        assert len(chosen) == 1 and chosen[0].final_prob > 0 and all(chosen[0].kept.values())
        assert step.kept_counts["top_k"] == 10 and step.kept_counts["top_p"] <= 10
    plain = generate(loaded, "Sort the numbers", params)
    assert plain.token_ids == result.token_ids  # explaining does not change what is sampled


def test_explained_greedy_steps_with_penalties_pick_the_generated_tokens(loaded):
    """The explanation applies the penalties to the tokens generated before each step, as generation did:
    its one-hot final distribution sits on the token that was produced at every step."""
    params = SamplingParams(temperature=0, max_new_tokens=10, presence_penalty=0.4, frequency_penalty=1.5)
    result = generate(loaded, "Count", params, explain=True)
    assert len(result.steps) == result.completion_tokens > 1
    for step, token_id in zip(result.steps, result.token_ids):
        chosen = [c for c in step.candidates if c.chosen]
        assert step.chosen_id == token_id and len(chosen) == 1 and chosen[0].final_prob == 1.0


def test_explained_penalties_skip_the_prompt():
    logits = torch.tensor([0.0, 1.0, 0.9, 0.0])
    ids = torch.tensor([[1, 1, 1]])
    params = SamplingParams(temperature=0, presence_penalty=0.4, frequency_penalty=1.5)
    assert int(stage_masks(logits, params, ids, prompt_length=3).final_probs.argmax()) == 1  # all prompt
    assert int(stage_masks(logits, params, ids, prompt_length=2).final_probs.argmax()) == 2  # one generated 1
