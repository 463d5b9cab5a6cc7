import pytest

from lmforge.errors import UserInputError
from lmforge.generate.generation import find_stop, generate, held_back_chars
from lmforge.generate.sampling import SamplingParams


def test_same_seed_reproduces_and_another_seed_differs(loaded):
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=8, seed=7)
    first, again = generate(loaded, "Hello", params), generate(loaded, "Hello", params)
    other = generate(loaded, "Hello", params.model_copy(update={"seed": 8}))
    assert first.token_ids == again.token_ids
    assert first.token_ids != other.token_ids


def test_greedy_is_deterministic_without_a_seed(loaded):
    first = generate(loaded, "Count", SamplingParams(temperature=0, max_new_tokens=6)).token_ids
    assert generate(loaded, "Count", SamplingParams(temperature=0, max_new_tokens=6)).token_ids == first
    assert generate(loaded, "Count", SamplingParams(greedy=True, max_new_tokens=6)).token_ids == first


def test_streamed_pieces_add_up_to_the_text(loaded):
    pieces: list[str] = []
    result = generate(loaded, "Reverse abc", SamplingParams(max_new_tokens=15, seed=1), on_text=pieces.append)
    assert "".join(pieces) == result.text
    assert len(pieces) > 1
    assert result.completion_tokens <= 15 and result.prompt_tokens > 0


def test_stop_string_ends_generation_and_is_never_shown(loaded):
    params = SamplingParams(temperature=0, max_new_tokens=32)
    full = generate(loaded, "The quick", params).text
    printable = [i for i in range(2, len(full) - 3) if full[i : i + 2].isprintable() and full[i : i + 2].strip()]
    assert printable, f"greedy text has no printable pair: {full!r}"
    start = printable[0]
    stop = full[start : start + 2]
    pieces: list[str] = []
    stopped = generate(loaded, "The quick", params.model_copy(update={"stop": [stop]}), on_text=pieces.append)
    assert stopped.text == full[: full.find(stop)]
    assert "".join(pieces) == stopped.text and stop not in "".join(pieces)
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 32


def test_length_finish_when_max_new_tokens_reached(loaded):
    result = generate(loaded, "Hi", SamplingParams(temperature=0, max_new_tokens=3))
    assert result.completion_tokens == 3 and result.finish_reason == "length"


def test_prompt_beyond_context_names_both_numbers(loaded):
    with pytest.raises(UserInputError, match=r"exceeds the model's context length of 256 tokens"):
        generate(loaded, "word " * 300, SamplingParams(max_new_tokens=10))


def test_raw_prompt_skips_the_chat_template(loaded):
    templated = generate(loaded, "Hi", SamplingParams(temperature=0, max_new_tokens=1))
    raw = generate(loaded, "Hi", SamplingParams(temperature=0, max_new_tokens=1), chat_template=False)
    assert raw.prompt_tokens < templated.prompt_tokens


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("abcEN", ["END"], 2),
        ("abcE", ["END"], 1),
        ("abc", ["END"], 0),
        ("ab\n", ["\n\nUser:"], 1),
        ("xyz", [], 0),
        ("aaEN", ["ENDX", "NN"], 2),
    ],
)
def test_text_that_may_begin_a_stop_string_is_held_back(text, stops, held):
    assert held_back_chars(text, stops) == held


def test_earliest_stop_string_wins():
    assert find_stop("one two three", ["three", "two"]) == 4
    assert find_stop("nothing", ["x"]) is None


def test_a_greedy_batch_equals_one_prompt_at_a_time(loaded):
    from lmforge.generate.generation import generate_batch

    prompts = [
        "What is 12 plus 30?",
        "Hi",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count the letters in hello."}],
    ]
    params = SamplingParams(temperature=0, max_new_tokens=8)
    batch = generate_batch(loaded, prompts, params)
    single = [generate(loaded, prompt, params) for prompt in prompts]
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]
    assert [r.text for r in batch] == [r.text for r in single]
    assert [r.prompt_tokens for r in batch] == [r.prompt_tokens for r in single]


def test_a_batch_honours_stop_strings_per_row(loaded):
    from lmforge.generate.generation import generate_batch

    params = SamplingParams(temperature=0, max_new_tokens=30)
    full = generate(loaded, "The quick", params).text
    stop = next(
        full[i : i + 2] for i in range(2, len(full) - 3) if full[i : i + 2].isprintable() and full[i : i + 2].strip()
    )
    stopped, other = generate_batch(loaded, ["The quick", "Hi"], params.model_copy(update={"stop": [stop]}))
    assert stopped.text == full[: full.find(stop)] and stopped.finish_reason == "stop"
    assert stop not in other.text


class _CharTokenizer:
    """One token per UTF-8 byte, so multi-byte characters arrive split across tokens."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def _stream(text: str, stops: list[str]) -> tuple[list[str], str]:
    import torch

    from lmforge.generate.generation import StopStringStreamer

    pieces: list[str] = []
    streamer = StopStringStreamer(_CharTokenizer(), stops, pieces.append)
    streamer.put(torch.tensor([0]))  # the prompt, skipped
    for byte in text.encode():
        streamer.put(torch.tensor([byte]))
        if streamer.stopped:
            break
    streamer.end()
    return pieces, streamer.text


def _first_completed_stop_cut(text: str, stops: list[str]) -> str:
    """Reference: generation ends when a stop string is first complete; the text ends where it starts."""
    for end in range(1, len(text) + 1):
        starts = [end - len(stop) for stop in stops if text[:end].endswith(stop)]
        if starts:
            return text[: min(starts)]
    return text


def test_streamer_property_pieces_add_up_and_never_show_a_stop():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    alphabet = st.sampled_from(list("ab\n é中"))

    @settings(max_examples=120, deadline=None)
    @given(st.text(alphabet, max_size=40), st.lists(st.text(alphabet, min_size=1, max_size=4), max_size=3))
    def check(text, stops):
        pieces, final = _stream(text, stops)
        assert final == _first_completed_stop_cut(text, stops)
        assert "".join(pieces) == final
        assert all("\ufffd" not in piece for piece in pieces)

    check()


def test_greedy_with_penalties_equals_a_hand_written_decode(loaded):
    """generate passes the penalties before the filters: token by token, the argmax of the raw logits minus
    presence + frequency x count over the generated tokens (OpenAI's definition)."""
    import torch

    from lmforge.generate.generation import encode_prompt, generate_batch

    params = SamplingParams(temperature=0, max_new_tokens=12, presence_penalty=0.4, frequency_penalty=1.5)
    prompt = encode_prompt(loaded, "Count")
    ids, generated = list(prompt), []
    with torch.inference_mode():
        for _ in range(12):
            logits = loaded.model(torch.tensor([ids])).logits[0, -1].float()
            for token in set(generated):
                logits[token] -= 0.4 + 1.5 * generated.count(token)
            generated.append(int(torch.argmax(logits)))
            ids.append(generated[-1])
            if generated[-1] in loaded.stop_token_ids:
                break
    assert generate(loaded, "Count", params).token_ids == generated
    plain = generate(loaded, "Count", params.model_copy(update={"presence_penalty": 0.0, "frequency_penalty": 0.0}))
    assert plain.token_ids != generated  # the penalties changed what was said
    assert generate_batch(loaded, ["Count", "What is 12 plus 30?"], params)[0].token_ids == generated


def test_a_default_length_is_capped_to_the_context_left_and_a_chosen_one_is_not(loaded):
    """max_new_tokens' default (256) is beyond a 64-token context: it shrinks to fit, with a note."""
    import dataclasses

    from lmforge.generate.sampling import sampling_params

    loaded = dataclasses.replace(loaded, context_length=64)
    result = generate(loaded, "Sort 3 1 2.", sampling_params("precise", seed=0))
    room = loaded.context_length - result.prompt_tokens
    assert result.notes == [
        f"max_new_tokens capped at {room}: the prompt takes {result.prompt_tokens} of the "
        f"model's 64-token context, which leaves no room for the default 256 (pass "
        "--max-new-tokens to choose)"
    ]
    assert result.completion_tokens <= room
    assert generate(loaded, "Hi", sampling_params(max_new_tokens=3)).notes == []
    with pytest.raises(UserInputError, match=r"plus max_new_tokens \(64\) exceeds"):
        generate(loaded, "Sort 3 1 2.", sampling_params("precise", max_new_tokens=64))
    with pytest.raises(UserInputError, match=r"leaves no room for a reply"):
        generate(loaded, "word " * 80, sampling_params())
