"""Generate text with transformers' own `generate`, streamed as it is produced, honouring stop strings.

Streaming uses a synchronous streamer (transformers calls `put` with each new token before it checks
its stopping criteria), so text reaches the caller token by token without a thread. Stop strings are
honoured exactly: text that could be the start of a stop string is held back until it is known not
to be one, and the stop string itself is never shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import UserInputError
from lmforge.generate.load import LoadedModel
from lmforge.generate.sampling import SamplingParams


@dataclass
class GenerationResult:
    text: str
    finish_reason: str  # "stop" (eos or a stop string) | "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    steps: list[Any] = field(default_factory=list)  # explain.StepExplanation per token when explain=True
    notes: list[str] = field(default_factory=list)  # what was decided for the user (a capped default length)


def held_back_chars(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` might be the start of a stop string (so must wait)."""
    longest = min(len(text), max((len(s) for s in stops), default=1) - 1)
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(stop.startswith(tail) for stop in stops):
            return size
    return 0


def find_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string starts in `text`, or None."""
    hits = [index for stop in stops if (index := text.find(stop)) >= 0]
    return min(hits) if hits else None


class StopStringStreamer:
    """Decodes the generated tokens incrementally and emits only text that is final.

    Final means: not an incomplete UTF-8 character and not a possible prefix of a stop string. Once a
    stop string appears, `stopped` is set and the text is cut before it; StopOnFlag then ends generation
    on that same step. Decoding is incremental (text-generation-inference's prefix/read offsets), so each
    token costs a short decode rather than one of the whole reply.
    """

    def __init__(self, tokenizer: Any, stops: list[str], on_text: Callable[[str], None] | None):
        self.tokenizer = tokenizer
        self.stops = stops
        self.on_text = on_text
        self.token_ids: list[int] = []
        self.text = ""  # the final text so far (never includes a stop string)
        self.emitted = 0
        self.stopped = False
        self._skip_prompt = True
        self._prefix_offset = 0  # tokens before this are settled; decoding restarts here for context
        self._read_offset = 0  # tokens before this are already in self.text

    def put(self, value: Any) -> None:
        if self._skip_prompt:  # generate first hands the streamer the prompt itself
            self._skip_prompt = False
            return
        if self.stopped:
            return
        self.token_ids.extend(int(t) for t in value.reshape(-1).tolist())
        self._append(self._delta(final=False))

    def end(self) -> None:
        if not self.stopped:
            self._append(self._delta(final=True))
        self._emit(len(self.text))

    def _delta(self, *, final: bool) -> str:
        """New text since the last call; empty while the newest bytes are an incomplete character."""
        decode = self.tokenizer.decode
        prefix = decode(self.token_ids[self._prefix_offset : self._read_offset], skip_special_tokens=True)
        current = decode(self.token_ids[self._prefix_offset :], skip_special_tokens=True)
        if final:
            return current[len(prefix) :].rstrip("\ufffd")
        if len(current) <= len(prefix) or current.endswith("\ufffd"):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self.token_ids)
        return current[len(prefix) :]

    def _append(self, delta: str) -> None:
        if not delta:
            return
        # A stop string may begin up to (longest stop - 1) characters before the new text.
        start = max(0, len(self.text) - max((len(stop) for stop in self.stops), default=1) + 1)
        self.text += delta
        hit = find_stop(self.text[start:], self.stops)
        if hit is not None:
            self.stopped = True
            self.text = self.text[: start + hit]
            self._emit(len(self.text))
            return
        self._emit(len(self.text) - held_back_chars(self.text, self.stops))

    def _emit(self, upto: int) -> None:
        if upto > self.emitted:
            if self.on_text is not None:
                self.on_text(self.text[self.emitted : upto])
            self.emitted = upto


def _stop_on_flag(streamer: StopStringStreamer) -> Any:
    from transformers import StoppingCriteria

    class StopOnFlag(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), streamer.stopped, dtype=torch.bool, device=input_ids.device)

    return StopOnFlag()


def encode_prompt(loaded: LoadedModel, prompt: str | list[dict[str, str]], *, chat_template: bool = True) -> list[int]:
    """Token ids of a prompt: a string (rendered as one user turn through the chat template unless
    chat_template=False) or a list of chat messages."""
    if isinstance(prompt, list):
        text = loaded.render_chat(prompt)
    elif chat_template:
        text = loaded.render_chat([{"role": "user", "content": prompt}])
    else:
        text = prompt
    # The template already wrote any bos it wants; raw text gets the tokenizer's usual specials.
    add_special = not (isinstance(prompt, list) or chat_template)
    return loaded.tokenizer(text, add_special_tokens=add_special)["input_ids"]


def fit_to_context(
    loaded: LoadedModel, prompt_tokens: int, params: SamplingParams
) -> tuple[SamplingParams, str | None]:
    """The params to generate with, and a note when the default length had to be shortened.

    A max_new_tokens the user chose (set in `params`) must fit beside the prompt or it is an error. The
    default (256) is only a ceiling, so it is capped to the context the prompt leaves: a small model's
    256-token context must not refuse every prompt because of a number nobody asked for.
    """
    context, asked = loaded.context_length, params.max_new_tokens
    room = context - prompt_tokens
    if asked <= room:
        return params, None
    if "max_new_tokens" in params.model_fields_set:
        raise UserInputError(
            f"prompt ({prompt_tokens} tokens) plus max_new_tokens ({asked}) exceeds the model's "
            f"context length of {context} tokens; shorten the prompt or lower max_new_tokens"
        )
    if room < 1:
        raise UserInputError(
            f"prompt ({prompt_tokens} tokens) leaves no room for a reply in the model's context length of "
            f"{context} tokens; shorten the prompt"
        )
    note = (
        f"max_new_tokens capped at {room}: the prompt takes {prompt_tokens} of the model's {context}-token "
        f"context, which leaves no room for the default {asked} (pass --max-new-tokens to choose)"
    )
    return params.model_copy(update={"max_new_tokens": room}), note


def _custom_processors(params: SamplingParams, prompt_length: int) -> dict[str, Any]:
    """With presence/frequency penalties the whole processor chain is passed to generate (its config is then
    neutral: SamplingParams.to_generation_config), so the penalties run before temperature and the filters."""
    return {"logits_processor": params.logits_processors(prompt_length)} if params.has_occurrence_penalty else {}


def generate(
    loaded: LoadedModel,
    prompt: str | list[dict[str, str]],
    params: SamplingParams,
    *,
    chat_template: bool = True,
    on_text: Callable[[str], None] | None = None,
    explain: bool = False,
    explain_top: int = 10,
) -> GenerationResult:
    """Generate a reply to `prompt`; `on_text` receives each piece of final text as it is produced.

    `explain=True` also returns, per generated token, how repetition penalty, temperature, top-k,
    top-p and min-p reshaped the distribution (lmforge.generate.explain), computed from the raw
    logits by the same transformers processors that chose the token.
    """
    import time

    import torch
    from transformers import StoppingCriteriaList, set_seed

    prompt_ids = encode_prompt(loaded, prompt, chat_template=chat_template)
    params, note = fit_to_context(loaded, len(prompt_ids), params)
    if params.seed is not None:
        set_seed(params.seed)
    stops = loaded.stop_token_ids
    config = params.to_generation_config(eos_token_id=stops, pad_token_id=loaded.tokenizer.pad_token_id)
    if explain:
        config.return_dict_in_generate = True
        config.output_logits = True
    streamer = StopStringStreamer(loaded.tokenizer, params.stop, on_text)
    input_ids = torch.tensor([prompt_ids], device=loaded.device)
    started = time.perf_counter()
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_stop_on_flag(streamer)]),
            **_custom_processors(params, len(prompt_ids)),
        )
    seconds = time.perf_counter() - started
    sequences = output.sequences if explain else output
    new_ids = sequences[0, len(prompt_ids) :].tolist()
    ended_on_eos = bool(new_ids) and new_ids[-1] in stops
    finish = "stop" if streamer.stopped or ended_on_eos else "length"
    steps = []
    if explain:
        from lmforge.generate.explain import explain_steps

        steps = explain_steps(output.logits, sequences, len(prompt_ids), params, loaded.tokenizer, top=explain_top)
    return GenerationResult(
        text=streamer.text,
        finish_reason=finish,
        prompt_tokens=len(prompt_ids),
        completion_tokens=len(new_ids),
        token_ids=new_ids,
        seconds=seconds,
        steps=steps,
        notes=[note] if note else [],
    )


def generate_batch(
    loaded: LoadedModel,
    prompts: list[str | list[dict[str, str]]],
    params: SamplingParams,
    *,
    chat_template: bool = True,
) -> list[GenerationResult]:
    """Generate for several prompts in one left-padded batch (evaluation; no streaming).

    Greedy results equal one-at-a-time `generate` (tested); sampled ones differ from it because the batch
    draws from one random stream, but the same seed and batch reproduce. Each prompt must fit the context
    (a default max_new_tokens is capped to what the longest prompt leaves).
    """
    import time

    import torch
    from transformers import set_seed

    encoded = [encode_prompt(loaded, prompt, chat_template=chat_template) for prompt in prompts]
    longest = max(len(ids) for ids in encoded)
    params, _ = fit_to_context(loaded, longest, params)
    if params.seed is not None:
        set_seed(params.seed)
    stops = loaded.stop_token_ids
    pad = loaded.tokenizer.pad_token_id
    config = params.to_generation_config(eos_token_id=stops, pad_token_id=pad)
    if params.stop:
        config.stop_strings = params.stop  # transformers' StopStringCriteria ends each row on its own
    input_ids = torch.tensor([[pad] * (longest - len(ids)) + ids for ids in encoded], device=loaded.device)
    attention = torch.tensor([[0] * (longest - len(ids)) + [1] * len(ids) for ids in encoded], device=loaded.device)
    started = time.perf_counter()
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            generation_config=config,
            tokenizer=loaded.tokenizer,
            **_custom_processors(params, longest),
        )
    seconds = time.perf_counter() - started
    results = []
    for ids, row in zip(encoded, output[:, longest:].tolist()):
        end = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
        new_ids = row[:end]
        text = loaded.tokenizer.decode(new_ids, skip_special_tokens=True)
        cut = find_stop(text, params.stop)
        if cut is not None:  # a row a stop string ended is padded after it
            while new_ids and new_ids[-1] == pad and pad not in stops:
                new_ids.pop()
        ended = bool(new_ids) and new_ids[-1] in stops
        results.append(
            GenerationResult(
                text=text.rstrip("\ufffd") if cut is None else text[:cut],  # as the streamer: no half character
                finish_reason="stop" if ended or cut is not None else "length",
                prompt_tokens=len(ids),
                completion_tokens=len(new_ids),
                token_ids=new_ids,
                seconds=seconds,
            )
        )
    return results
