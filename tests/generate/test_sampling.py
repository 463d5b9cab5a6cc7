import pytest
import torch

from lmforge.errors import UserInputError
from lmforge.generate.sampling import PRESETS, SamplingParams, sampling_params, with_updates


def test_presets_follow_the_seed_table():
    # the tutorials: customer service T=0.3 k=20 p=0.5; ad copy T=1.2 k=50 p=0.9
    precise, creative = sampling_params("precise"), sampling_params("creative")
    assert (precise.temperature, precise.top_k, precise.top_p) == (0.3, 20, 0.5)
    assert (creative.temperature, creative.top_k, creative.top_p) == (1.2, 50, 0.9)
    balanced = sampling_params("balanced")
    assert precise.temperature < balanced.temperature < creative.temperature
    assert sampling_params() == balanced


def test_overrides_win_over_the_preset_and_none_is_ignored():
    params = sampling_params("precise", temperature=0.9, top_k=None)
    assert params.temperature == 0.9 and params.top_k == 20


def test_every_invalid_value_is_reported_at_once():
    with pytest.raises(UserInputError) as error:
        sampling_params(temperature=-0.1, top_p=0, top_k=-1, min_p=1.5, repetition_penalty=0, max_new_tokens=0)
    message = str(error.value)
    for field in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens"):
        assert field in message
    assert "\n" not in message


def test_unknown_preset_and_empty_stop_are_errors():
    with pytest.raises(UserInputError, match="precise, balanced, creative"):
        sampling_params("wild")
    with pytest.raises(UserInputError, match="stop"):
        sampling_params(stop=[""])
    with pytest.raises(UserInputError, match="top_p"):
        with_updates(sampling_params(), top_p=1.5)


def test_temperature_zero_means_greedy():
    params = SamplingParams(temperature=0)
    assert params.is_greedy
    config = params.to_generation_config()
    assert config.do_sample is False
    assert params.logits_processors() == []


def test_processors_equal_the_ones_transformers_builds(loaded):
    """Same classes, same order, same output as GenerationMixin._get_logits_processor for our config."""
    params = SamplingParams(temperature=0.7, top_k=12, top_p=0.8, min_p=0.05, repetition_penalty=1.3)
    theirs = loaded.model._get_logits_processor(
        generation_config=params.to_generation_config(), input_ids_seq_length=3, device="cpu"
    )
    ours = params.logits_processors()
    assert [type(p) for p in ours] == [type(p) for p in theirs]
    torch.manual_seed(0)
    ids = torch.tensor([[1, 5, 7]])
    logits = torch.randn(1, 300)
    assert torch.equal(ours(ids, logits.clone()), theirs(ids, logits.clone()))


def test_generation_config_sets_every_sampling_field_so_model_defaults_cannot_leak():
    config = sampling_params("creative", top_k=0).to_generation_config()
    assert (config.temperature, config.top_k, config.top_p, config.do_sample) == (1.2, 0, 0.9, True)
    assert set(PRESETS) == {"precise", "balanced", "creative"}


def test_presence_and_frequency_penalties_count_only_generated_tokens():
    import torch

    from lmforge.generate.sampling import OccurrencePenaltyLogitsProcessor

    penalty = OccurrencePenaltyLogitsProcessor(presence_penalty=0.5, frequency_penalty=0.25, prompt_length=2)
    ids = torch.tensor([[4, 4, 1, 1, 1, 2]])  # prompt 4 4; generated 1 three times, 2 once
    scores = penalty(ids, torch.zeros(1, 6))
    assert scores.tolist() == [[0.0, -(0.5 + 3 * 0.25), -(0.5 + 0.25), 0.0, 0.0, 0.0]]  # token 4 is prompt only
    params = SamplingParams(temperature=0.8, presence_penalty=0.5)
    names = [type(p).__name__ for p in params.logits_processors(prompt_length=2)]
    assert names[0] == "OccurrencePenaltyLogitsProcessor" and names[1] == "TemperatureLogitsWarper"  # as vLLM


def test_penalties_outside_openais_range_are_refused():
    with pytest.raises(UserInputError, match="presence_penalty.*less than or equal to 2"):
        sampling_params(presence_penalty=2.5)
    with pytest.raises(UserInputError, match="frequency_penalty.*greater than or equal to -2"):
        sampling_params(frequency_penalty=-3)
