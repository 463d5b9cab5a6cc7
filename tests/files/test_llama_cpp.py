"""lmforge's GGUF files in the real llama.cpp: same tokens and greedy answers as transformers.

The model is a tiny Llama (hidden 256, so K-quants use real 256-value super-blocks) trained for a few
seconds to memorise eight built-in chat problems, so its greedy answers have margins a trained model
has; the held-out problems (split "test") measure top-1 agreement where it is less sure.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from lmforge.data.builtin import load_builtin, prompt_messages
from lmforge.errors import UserInputError
from lmforge.files.convert import convert_model
from lmforge.files.llama_cpp import run_llama_cpp

# Top-1 agreement with transformers (float32) over every position of the held-out chats (~900 positions);
# measured on this model: q4_0 0.966, q4_k_m 0.974, q5_k_m 0.990, q6_k 0.991 (docs/convert.md). The bounds
# leave about 2 points for other CPUs' SIMD paths in llama.cpp.
TOP1_TOLERANCE = {"q4_0": 0.94, "q4_k_m": 0.95, "q5_k_m": 0.97, "q6_k": 0.97}


@contextlib.contextmanager
def _one_thread():
    """Two torch threads on a shared 2-core box spin against each other (30x slower here); one does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer
    train = load_builtin("arith-sft", n=8, split="train")["messages"]
    held_out = load_builtin("arith-sft", n=16, split="test")["messages"]
    with _one_thread():
        torch.manual_seed(0)
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=256,
                intermediate_size=512,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=128,
                bos_token_id=None,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                tie_word_embeddings=False,
            )
        )
        batch = tokenizer(
            [tokenizer.apply_chat_template(m, tokenize=False) for m in train],
            padding=True,
            return_tensors="pt",
            add_special_tokens=False,
        )
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(40):
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        prompts = [
            tokenizer.apply_chat_template(prompt_messages({"messages": m}), tokenize=False, add_generation_prompt=True)
            for m in train
        ]
        answers = []
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                out = model.generate(
                    torch.tensor([ids]),
                    max_new_tokens=8,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            generated = out[0, len(ids) :].tolist()
            answers.append(
                generated[: generated.index(tokenizer.eos_token_id)]
                if tokenizer.eos_token_id in generated
                else generated
            )
        sequences = [
            tokenizer(tokenizer.apply_chat_template(m, tokenize=False), add_special_tokens=False)["input_ids"]
            for m in held_out
        ]
        with torch.no_grad():
            top1 = [model(torch.tensor([ids])).logits[0].argmax(-1).tolist() for ids in sequences]
    path = tmp_path_factory.mktemp("trained-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return {
        "path": path,
        "prompts": prompts,
        "answers": answers,
        "sequences": sequences,
        "top1": top1,
        "prompt_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
        "eos": tokenizer.eos_token_id,
    }


def _gguf(trained: dict, tmp_path: Path, quant: str) -> Path:
    path = tmp_path / f"model-{quant}.gguf"
    report = convert_model(trained["path"], path, quant=quant, progress=False)
    assert report.checks["pre_tokenizer"] == "gpt-2"  # GPT-2 byte-level; no merge joins digits (as trained)
    return path


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_llama_cpp_tokenizes_chat_text_and_answers_as_transformers(tmp_path, llama_cpp, trained, quant):
    results, _ = run_llama_cpp(
        _gguf(trained, tmp_path, quant), prompts=trained["prompts"], max_tokens=8, stop=[trained["eos"]], threads=1
    )
    assert [r.tokens for r in results] == trained["prompt_ids"]  # same ids from the same text
    assert [r.generated for r in results] == trained["answers"]  # same greedy answer
    assert all(answer for answer in trained["answers"])


@pytest.mark.parametrize("quant", sorted(TOP1_TOLERANCE))
def test_lower_bit_gguf_agrees_with_transformers_top1_within_tolerance(tmp_path, llama_cpp, trained, quant):
    results, top1 = run_llama_cpp(
        _gguf(trained, tmp_path, quant),
        prompts=trained["prompts"][:1],
        max_tokens=8,
        stop=[trained["eos"]],
        sequences=trained["sequences"],
        threads=1,
    )
    assert results[0].tokens == trained["prompt_ids"][0]
    pairs = [
        (a, b) for ours, theirs in zip(top1, trained["top1"], strict=True) for a, b in zip(ours, theirs, strict=True)
    ]
    agreement = sum(a == b for a, b in pairs) / len(pairs)
    assert agreement >= TOP1_TOLERANCE[quant], f"{quant}: top-1 agreement {agreement:.3f}"


def test_k_quant_mix_puts_q6_k_where_llama_cpp_does(tmp_path, trained):
    import gguf

    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(_gguf(trained, tmp_path, "q4_k_m")).tensors}
    # llama-quant.cpp: output → Q6_K; attn_v / ffn_down of use_more_bits layers (the last of 2) → Q6_K
    assert types["output.weight"] == types["blk.1.attn_v.weight"] == types["blk.1.ffn_down.weight"] == "Q6_K"
    assert types["blk.0.attn_v.weight"] == types["blk.0.ffn_down.weight"] == types["blk.0.attn_q.weight"] == "Q4_K"
    assert types["token_embd.weight"] == "Q4_K" and types["blk.0.attn_norm.weight"] == "F32"


def test_a_tokenizer_llama_cpp_cannot_split_alike_is_refused_unless_forced(tmp_path, trained):
    """The bug: the quickstart tokenizer split ' 4' (space + digit) and the GGUF said 'default', so
    llama.cpp split digits differently and the exported model answered something else."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained["path"])
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r" ?\p{N}"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    folder = tmp_path / "odd-split"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((trained["path"] / name).read_bytes())
    tokenizer.save_pretrained(folder)
    with pytest.raises(UserInputError, match="no llama.cpp pre-tokenizer splits text as .* --pre-tokenizer NAME"):
        convert_model(folder, tmp_path / "odd.gguf", quant="f16", progress=False)
    report = convert_model(folder, tmp_path / "odd.gguf", quant="f16", pre_tokenizer="gpt-2", progress=False)
    assert report.checks["pre_tokenizer"] == "gpt-2" and any("forced" in note for note in report.notes)
