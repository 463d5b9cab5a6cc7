"""The batching engine: batched decoding equals transformers' generate, the queue is bounded, time limits hold."""

from __future__ import annotations

import threading
import time

import pytest

from lmforge.generate.generation import encode_prompt, generate
from lmforge.generate.sampling import SamplingParams
from lmforge.serve.engine import Engine, QueueFullError, Request

PROMPTS = ["hi", "What is 12 plus 30? The answer is", "Sort the numbers 3 1 2:", "Reverse the string abc " * 3]


def _collect(engine: Engine, model: str, prompt_ids: list[int], params: SamplingParams, **kwargs):
    events, done = [], threading.Event()

    def on_event(event):
        events.append(event)
        if event.finish_reason is not None:
            done.set()

    request = Request(model, prompt_ids, params, on_event, **kwargs)
    engine.submit(request)
    return events, done, request


def test_staggered_batch_decodes_exactly_like_generate(tiny_loaded):
    """Requests joining a running batch (left-padded cache merge) get transformers' own greedy tokens."""
    params = SamplingParams(temperature=0, max_new_tokens=40)
    expected = [generate(tiny_loaded, prompt, params).token_ids for prompt in PROMPTS]
    assert len(expected[0]) == 40  # the first request is still running when the others join
    engine = Engine({"m": tiny_loaded}, max_batch_size=8)
    engine.start()
    try:
        runs = [_collect(engine, "m", encode_prompt(tiny_loaded, PROMPTS[0]), params)]
        deadline = time.monotonic() + 30
        while not runs[0][0] and time.monotonic() < deadline:  # wait until it is decoding
            time.sleep(0.0005)
        for prompt in PROMPTS[1:]:
            runs.append(_collect(engine, "m", encode_prompt(tiny_loaded, prompt), params))
        for _, done, _ in runs:
            assert done.wait(30)
    finally:
        engine.stop()
    for (events, _, _), tokens in zip(runs, expected):
        assert [e.token_id for e in events] == tokens
        assert events[-1].completion_tokens == len(tokens)
    assert engine.stats.max_batch_sequences >= 2


def test_penalised_requests_in_one_batch_decode_like_generate(tiny_loaded):
    """Presence/frequency penalties count each request's own generated tokens, not its prompt's or a
    neighbour's: the batched engine gives what generate gives one prompt at a time."""
    params = SamplingParams(temperature=0, max_new_tokens=16, presence_penalty=0.4, frequency_penalty=1.5)
    expected = [generate(tiny_loaded, prompt, params).token_ids for prompt in PROMPTS]
    engine = Engine({"m": tiny_loaded}, max_batch_size=8)
    runs = [_collect(engine, "m", encode_prompt(tiny_loaded, prompt), params) for prompt in PROMPTS]
    engine.start()
    try:
        for _, done, _ in runs:
            assert done.wait(30)
    finally:
        engine.stop()
    assert [[e.token_id for e in events] for events, _, _ in runs] == expected


def test_full_queue_refuses_and_unknown_model_is_named(tiny_loaded):
    engine = Engine({"m": tiny_loaded}, max_queue=1)  # not started: nothing leaves the queue
    _collect(engine, "m", [1, 2], SamplingParams(max_new_tokens=2))
    with pytest.raises(QueueFullError, match="already waiting"):
        _collect(engine, "m", [1, 2], SamplingParams(max_new_tokens=2))
    with pytest.raises(Exception, match="'other' is not served"):
        _collect(engine, "other", [1, 2], SamplingParams(max_new_tokens=2))


def test_timeout_ends_a_request_and_stop_finishes_in_flight(tiny_loaded):
    engine = Engine({"m": tiny_loaded})
    ids = encode_prompt(tiny_loaded, "hi")
    timed, timed_done, _ = _collect(
        engine, "m", ids, SamplingParams(max_new_tokens=200), timeout_s=1e-6, ignore_eos=True
    )
    kept, kept_done, _ = _collect(engine, "m", ids, SamplingParams(max_new_tokens=20), ignore_eos=True)
    engine.start()
    engine.stop()  # graceful: returns once admitted and waiting requests are done
    assert timed_done.is_set() and timed[-1].finish_reason == "timeout"
    assert kept_done.is_set() and kept[-1].finish_reason == "length" and kept[-1].completion_tokens == 20


def test_a_failing_model_ends_its_requests_not_the_engine(tiny_loaded):
    import dataclasses

    calls = {"n": 0}

    class FailsOnce:
        generation_config = tiny_loaded.model.generation_config

        def __call__(self, **kwargs):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("out of memory")
            return tiny_loaded.model(**kwargs)

    engine = Engine({"m": dataclasses.replace(tiny_loaded, model=FailsOnce())})
    engine.start()
    try:
        failed, failed_done, _ = _collect(engine, "m", [1, 2, 3], SamplingParams(max_new_tokens=3))
        assert failed_done.wait(30)
        ok, ok_done, _ = _collect(engine, "m", [1, 2, 3], SamplingParams(max_new_tokens=3), ignore_eos=True)
        assert ok_done.wait(30)
    finally:
        engine.stop()
    assert failed[-1].finish_reason == "error" and "RuntimeError: out of memory" in failed[-1].error
    assert ok[-1].finish_reason == "length" and ok[-1].completion_tokens == 3


def test_text_held_for_a_stop_string_is_sent_when_eos_comes(tiny_loaded):
    """'Hello wor' could be the start of the stop string 'world', so it waits; eos makes it final."""
    import dataclasses

    tokenizer = tiny_loaded.tokenizer
    script = tokenizer.encode("Hello wor", add_special_tokens=False) + [tokenizer.eos_token_id]

    class Scripted:
        generation_config = tiny_loaded.model.generation_config
        step = 0

        def __call__(self, **kwargs):
            output = tiny_loaded.model(**kwargs)
            output.logits[..., script[min(self.step, len(script) - 1)]] = 1e9
            self.step += 1
            return output

    engine = Engine({"m": dataclasses.replace(tiny_loaded, model=Scripted())})
    engine.start()
    try:
        events, done, _ = _collect(
            engine, "m", [1, 2], SamplingParams(temperature=0, max_new_tokens=50, stop=["world"])
        )
        assert done.wait(30)
    finally:
        engine.stop()
    assert "".join(e.text for e in events) == "Hello wor"
    assert events[-1].finish_reason == "stop" and events[-1].completion_tokens == len(script)


def test_a_failed_prefill_leaves_the_running_rows_alone(tiny_loaded):
    import dataclasses

    state = {"fail_next_prefill": False}

    class Flaky:
        generation_config = tiny_loaded.model.generation_config

        def __call__(self, **kwargs):
            time.sleep(0.005)
            if kwargs["input_ids"].shape[1] > 1 and state["fail_next_prefill"]:
                state["fail_next_prefill"] = False
                raise RuntimeError("out of memory")
            return tiny_loaded.model(**kwargs)

    engine = Engine({"m": dataclasses.replace(tiny_loaded, model=Flaky())})
    engine.start()
    try:
        running, running_done, _ = _collect(engine, "m", [1, 2, 3], SamplingParams(max_new_tokens=40), ignore_eos=True)
        while not running:
            time.sleep(0.001)
        state["fail_next_prefill"] = True
        failed, failed_done, _ = _collect(engine, "m", [4, 5, 6], SamplingParams(max_new_tokens=5))
        assert failed_done.wait(30) and running_done.wait(30)
    finally:
        engine.stop()
    assert failed[-1].finish_reason == "error"
    assert running[-1].finish_reason == "length" and running[-1].completion_tokens == 40


def test_a_request_whose_sequence_cannot_be_built_fails_alone(tiny_loaded):
    """A seed torch cannot take (2**64) used to raise in the engine thread and kill it for every request."""
    params = SamplingParams(max_new_tokens=3)
    engine = Engine({"m": tiny_loaded})
    engine.start()
    try:
        bad, bad_done, _ = _collect(engine, "m", [1, 2, 3], params.model_copy(update={"seed": 2**64}))
        assert bad_done.wait(30)
        ok, ok_done, _ = _collect(engine, "m", [1, 2, 3], params, ignore_eos=True)
        assert ok_done.wait(30)
    finally:
        engine.stop()
    assert bad[-1].finish_reason == "error" and "seed" in bad[-1].error.lower()
    assert ok[-1].finish_reason == "length" and ok[-1].completion_tokens == 3


def test_a_row_without_a_valid_distribution_fails_only_itself(tiny_loaded):
    """repetition_penalty 1e-300 divides positive logits into inf: that row's sampling fails, while the greedy
    rows beside it in the same decode step go on to exactly generate's tokens."""
    greedy = SamplingParams(temperature=0, max_new_tokens=24)
    expected = [generate(tiny_loaded, prompt, greedy).token_ids for prompt in PROMPTS[:3]]
    broken = SamplingParams.model_construct(
        **{**SamplingParams(temperature=1.0, max_new_tokens=24).model_dump(), "repetition_penalty": 1e-300}
    )
    engine = Engine({"m": tiny_loaded}, max_batch_size=8)
    runs = [_collect(engine, "m", encode_prompt(tiny_loaded, prompt), greedy) for prompt in PROMPTS[:3]]
    bad, bad_done, _ = _collect(engine, "m", encode_prompt(tiny_loaded, PROMPTS[3]), broken)
    engine.start()  # all four are admitted together, so they share every decode step
    try:
        assert bad_done.wait(30) and all(done.wait(30) for _, done, _ in runs)
    finally:
        engine.stop()
    assert bad[-1].finish_reason == "error" and "distribution" in bad[-1].error
    assert [[e.token_id for e in events] for events, _, _ in runs] == expected


def test_the_engine_threads_death_cannot_hide(tiny_loaded, monkeypatch):
    """A bug that escapes the per-sequence handling ends the thread: every request it holds is answered with an
    error, later submissions are refused, `failure` says why, and the owner's on_death hook runs."""
    from lmforge.serve.engine import EngineDeadError

    engine = Engine({"m": tiny_loaded})
    died = threading.Event()
    engine.on_death = lambda error: died.set()

    def broken(*_):
        raise RuntimeError("scheduler bug")

    monkeypatch.setattr(engine, "_take_waiting", broken)
    waiting, waiting_done, _ = _collect(engine, "m", [1, 2, 3], SamplingParams(max_new_tokens=3))
    engine.start()
    assert waiting_done.wait(30) and died.wait(30)
    assert waiting[-1].finish_reason == "error" and "scheduler bug" in waiting[-1].error
    assert not engine.alive and "RuntimeError: scheduler bug" in engine.failure
    with pytest.raises(EngineDeadError, match="scheduler bug"):
        _collect(engine, "m", [1, 2], SamplingParams(max_new_tokens=2))
    engine.stop()


def test_rows_with_broken_logits_fail_alone_in_every_sampling_path(tiny_loaded):
    """The batched paths (argmax, one softmax and draw for plain sampling rows) keep the per-row guarantee: a row
    whose logits hold NaN or +inf fails, the others in the same step get their tokens; a seeded row draws the
    same token whatever shares the batch."""
    import torch

    from lmforge.serve.engine import _choose_each, _Sequence

    events: list[list] = [[] for _ in range(5)]

    def sequence(index: int, **params) -> _Sequence:
        request = Request(
            "m", [1, 2], SamplingParams(max_new_tokens=4, top_k=0, top_p=1.0, **params), events[index].append
        )
        return _Sequence(request, tiny_loaded, set())

    vocabulary = len(tiny_loaded.tokenizer)
    logits = torch.randn(5, vocabulary)
    logits[0, 3] = float("nan")
    logits[1, 5] = float("inf")
    rows = [
        sequence(0, temperature=1.0),
        sequence(1, temperature=1.0),
        sequence(2, temperature=0),
        sequence(3, temperature=1.0),
        sequence(4, temperature=1.0, seed=7),
    ]
    tokens = _choose_each(rows, logits)
    assert [e[-1].finish_reason for e in events[:2]] == ["error", "error"] and rows[0].done and rows[1].done
    assert tokens[2] == int(logits[2].argmax()) and not any(e.finish_reason for e in events[2] + events[3])
    alone = sequence(4, temperature=1.0, seed=7)
    assert _choose_each([alone], logits[4:5]) == [tokens[4]]
