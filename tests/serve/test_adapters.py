"""Several LoRA adapters served on one copy of the base weights, each answering exactly like its merged model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from lmforge.generate.generation import encode_prompt, generate
from lmforge.generate.load import load_model
from lmforge.generate.sampling import SamplingParams
from lmforge.serve.engine import Engine, Request
from lmforge.serve.launch import load_engine

PROMPTS = ["hi", "What is 12 plus 30? The answer is", "Sort the numbers 3 1 2:"]
GREEDY = SamplingParams(temperature=0, max_new_tokens=12)


def _lora(base_dir: Path, folder: Path, seed: int, extra_token: str | None = None) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    if extra_token:  # a fine-tune that added a token ships its tokenizer and a resized embedding
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        tokenizer.add_tokens([extra_token])
        base.resize_token_embeddings(len(tokenizer))
        tokenizer.save_pretrained(folder)
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    )
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_llama_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"sql": _lora(tiny_llama_dir, root / "sql", 1), "chat": _lora(tiny_llama_dir, root / "chat", 2)}


def _run(engine, requests: list[tuple[str, str]]) -> list[list[int]]:
    """Submit every (model, prompt) at once, so names interleave step by step; token ids per request."""
    results = [[] for _ in requests]
    done = [threading.Event() for _ in requests]

    def listener(index: int):
        def on_event(event):
            if event.token_id is not None:
                results[index].append(event.token_id)
            if event.finish_reason is not None:
                done[index].set()

        return on_event

    for index, (model, prompt) in enumerate(requests):
        loaded = engine.models[model]
        engine.submit(Request(model, encode_prompt(loaded, prompt), GREEDY, listener(index)))
    engine.start()
    try:
        assert all(event.wait(60) for event in done)
    finally:
        engine.stop()
    return results


def test_adapters_share_the_base_weights_and_answer_like_their_merged_models(tiny_llama_dir, adapters):
    engine = load_engine(str(tiny_llama_dir), adapters=list(adapters.items()), served_model_name="base")
    models = engine.models
    assert models["sql"].model is models["chat"].model is models["base"].model  # one copy of the weights
    merged = {name: load_model(str(tiny_llama_dir), adapter=str(path)) for name, path in adapters.items()}
    merged["base"] = load_model(str(tiny_llama_dir))
    expected = {
        (name, prompt): generate(loaded, prompt, GREEDY).token_ids
        for name, loaded in merged.items()
        for prompt in PROMPTS
    }
    assert expected[("sql", PROMPTS[1])] != expected[("base", PROMPTS[1])]  # the adapters change the answers
    requests = [(name, prompt) for prompt in PROMPTS for name in ("base", "sql", "chat")]
    for request, tokens in zip(requests, _run(engine, requests), strict=True):
        assert tokens == expected[request], request
    # the three names shared decode steps (peft's mixed-adapter batch), not one step per name in turn
    assert engine.stats.max_batch_sequences == len(requests)
    assert engine.stats.decode_steps < 2 * GREEDY.max_new_tokens


def test_names_can_take_turns_instead(tiny_llama_dir, adapters):
    """mixed_adapters=False: a batch per name (the engine before mixed batches, kept for the benchmark)."""
    engine = load_engine(str(tiny_llama_dir), adapters=list(adapters.items()), served_model_name="base")
    turns = Engine(engine.models, mixed_adapters=False)
    requests = [(name, PROMPTS[1]) for name in ("base", "sql", "chat")]
    merged = {
        "base": load_model(str(tiny_llama_dir)),
        **{name: load_model(str(tiny_llama_dir), adapter=str(path)) for name, path in adapters.items()},
    }
    assert _run(turns, requests) == [generate(merged[name], prompt, GREEDY).token_ids for name, prompt in requests]
    assert turns.stats.max_batch_sequences == 1


def test_an_adapter_that_adds_tokens_gets_its_own_copy(tiny_llama_dir, adapters, tmp_path):
    grown = _lora(tiny_llama_dir, tmp_path / "grown", 3, extra_token="<sql>")
    engine = load_engine(str(tiny_llama_dir), adapters=[("sql", str(adapters["sql"])), ("grown", str(grown))])
    base_name = next(name for name in engine.models if name not in ("sql", "grown"))
    assert engine.models["sql"].model is engine.models[base_name].model
    assert engine.models["grown"].model is not engine.models[base_name].model
    assert len(engine.models["grown"].tokenizer) == len(engine.models[base_name].tokenizer) + 1


def test_merge_adapters_gives_each_its_own_copy(tiny_llama_dir, adapters):
    engine = load_engine(
        str(tiny_llama_dir), adapters=[("sql", str(adapters["sql"]))], served_model_name="base", merge_adapters=True
    )
    assert engine.models["sql"].model is not engine.models["base"].model
    assert engine.models["sql"].lora_name is None  # a plain merged model: nothing to switch
    expected = generate(load_model(str(tiny_llama_dir), adapter=str(adapters["sql"])), PROMPTS[1], GREEDY).token_ids
    assert _run(engine, [("sql", PROMPTS[1])]) == [expected]
