"""Sampling parameters: validated once, with presets, turned into transformers' own generation objects.

Order (transformers GenerationMixin._get_logits_processor): repetition penalty, then OpenAI's presence
and frequency penalties (as vLLM orders them: penalties before temperature), then temperature ->
top-k -> top-p -> min-p, each warper seeing the previous one's output. Temperature 0 (or greedy=True)
means greedy decoding: always the most likely token. llama.cpp orders its default sampler chain
differently (penalties, top-k, typical, top-p, min-p, then temperature last); see docs/generate.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lmforge.errors import UserInputError, join_problems

# Three points on the consistency/variety scale (docs/generate.md shows what each keeps of a distribution):
# precise for answers that should not vary, creative for varied text, balanced between. top-p after top-k
# within them follows Holtzman et al. 2020 (nucleus sampling); the order is transformers' processor order.
PRESETS: dict[str, dict[str, float | int]] = {
    "precise": {"temperature": 0.3, "top_k": 20, "top_p": 0.5},
    "balanced": {"temperature": 0.8, "top_k": 36, "top_p": 0.7},
    "creative": {"temperature": 1.2, "top_k": 50, "top_p": 0.9},
}
DEFAULT_PRESET = "balanced"


class SamplingParams(BaseModel):
    """How the next token is chosen. Defaults are the `balanced` preset with 256 new tokens."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    temperature: float = Field(0.8, ge=0, description="0 = greedy; < 1 sharpens, > 1 flattens the distribution")
    top_k: int = Field(36, ge=0, description="keep the k most likely tokens; 0 = off")
    top_p: float = Field(0.7, gt=0, le=1, description="keep the smallest set whose probability reaches p; 1 = off")
    min_p: float = Field(0.0, ge=0, le=1, description="drop tokens below min_p x the top token's probability; 0 = off")
    repetition_penalty: float = Field(1.0, gt=0, description="> 1 discourages tokens already in the text (CTRL paper)")
    presence_penalty: float = Field(
        0.0,
        ge=-2,
        le=2,
        description="OpenAI: subtracted from the logit of every token generated so far; > 0 favours new tokens",
    )
    frequency_penalty: float = Field(
        0.0,
        ge=-2,
        le=2,
        description="OpenAI: subtracted once per time a token was generated so far; > 0 discourages repeats",
    )
    max_new_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list, description="generation ends before the first of these strings")
    seed: int | None = None
    greedy: bool = False

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must not be empty")
        return value

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    @property
    def has_occurrence_penalty(self) -> bool:
        """Presence/frequency penalties, which transformers' GenerationConfig cannot express."""
        return self.presence_penalty != 0 or self.frequency_penalty != 0

    def to_generation_config(
        self, *, eos_token_id: list[int] | int | None = None, pad_token_id: int | None = None
    ) -> Any:
        """A complete transformers GenerationConfig: every sampling field is set, so a model's own
        generation_config.json (say top_k=20) can never fill a gap and change what the user asked for.

        With presence/frequency penalties every processor is neutral here: the caller passes
        `logits_processors(prompt_length)` to generate, since transformers appends custom processors after
        its own warpers, and the penalties must come before temperature."""
        from transformers import GenerationConfig

        if self.has_occurrence_penalty:
            neutral = self.model_copy(
                update={
                    "temperature": 1.0,
                    "top_k": 0,
                    "top_p": 1.0,
                    "min_p": 0.0,
                    "repetition_penalty": 1.0,
                    "presence_penalty": 0.0,
                    "frequency_penalty": 0.0,
                    "greedy": self.is_greedy,
                }
            )
            return neutral.to_generation_config(eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        sampling = not self.is_greedy
        # Greedy: the warpers are never applied (do_sample=False), so their fields stay at transformers' neutral values.
        return GenerationConfig(
            do_sample=sampling,
            temperature=self.temperature if sampling else 1.0,
            top_k=self.top_k if sampling else None,
            top_p=self.top_p if sampling else 1.0,
            min_p=self.min_p if sampling else None,
            repetition_penalty=self.repetition_penalty,
            max_new_tokens=self.max_new_tokens,
            num_beams=1,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )

    def logits_processors(self, prompt_length: int = 0) -> Any:
        """The LogitsProcessorList transformers builds for these params, in its order
        (GenerationMixin._get_logits_processor), with the presence/frequency penalties after the repetition
        penalty; greedy keeps only the penalties. `prompt_length`: where the generated tokens start in the
        input_ids the processors will see (the penalties count only those)."""
        from transformers import (
            LogitsProcessorList,
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        processors = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.has_occurrence_penalty:
            processors.append(
                OccurrencePenaltyLogitsProcessor(self.presence_penalty, self.frequency_penalty, prompt_length)
            )
        if self.is_greedy:
            return processors
        if self.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k != 0:
            processors.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            processors.append(TopPLogitsWarper(self.top_p))
        if self.min_p > 0:
            processors.append(MinPLogitsWarper(self.min_p))
        return processors


class OccurrencePenaltyLogitsProcessor:
    """OpenAI's presence and frequency penalties, as vLLM applies them: over the tokens generated so far (not
    the prompt), logit -= presence_penalty * [count > 0] + frequency_penalty * count."""

    def __init__(self, presence_penalty: float, frequency_penalty: float, prompt_length: int):
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids[:, self.prompt_length :]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency_penalty * counts - self.presence_penalty * (counts > 0).to(scores.dtype)


def sampling_params(preset: str | None = None, **overrides: Any) -> SamplingParams:
    """Params from a preset (default `balanced`) with `overrides` (None values ignored) on top.

    Every invalid value is reported at once, as one UserInputError line.
    """
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise UserInputError(f"no sampling preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS[name])
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return SamplingParams(**values)
    except ValidationError as error:
        raise UserInputError(join_problems(describe_errors(error))) from None


def describe_errors(error: ValidationError) -> list[str]:
    """pydantic's errors as 'field: what is wrong (got value)' lines."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "params"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{field}: {message} (got {item.get('input')!r})")
    return problems


def with_updates(params: SamplingParams, **updates: Any) -> SamplingParams:
    """A copy of `params` with `updates` validated (model_copy skips validation, so re-validate). Only the
    fields that were set are carried, so a default max_new_tokens stays a default (generation caps it)."""
    try:
        return SamplingParams(**{**params.model_dump(exclude_unset=True), **updates})
    except ValidationError as error:
        raise UserInputError(join_problems(describe_errors(error))) from None
