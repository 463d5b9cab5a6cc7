"""Tokenization: labels train exactly the assistant turns, truncation is counted, text is chunked."""

from __future__ import annotations

import copy
import warnings

import pytest
from datasets import Dataset

from lmforge.data.builtin import load_builtin
from lmforge.data.templates import QWEN
from lmforge.data.tokenize import IGNORE_INDEX, tokenize_chat, tokenize_documents, tokenize_text
from lmforge.errors import FormatError, UserInputError

MULTI_TURN = [
    {"role": "system", "content": "Answer with the number only."},
    {"role": "user", "content": "What is 12 plus 30?"},
    {"role": "assistant", "content": "42"},
    {"role": "user", "content": "Reverse the letters a b c."},
    {"role": "assistant", "content": "c b a"},
]
END_OF_TURN = {"tokenizer": "<|im_end|>", "chatml": "<|im_end|>", "qwen": "<|im_end|>", "alpaca": "<|im_end|>",
               "llama-3": "<|eot_id|>"}  # fmt: skip


@pytest.fixture()
def bare_tokenizer(tiny_tokenizer):
    """The tiny ChatML tokenizer with its chat_template removed, as a base model's tokenizer would be."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = None
    return tokenizer


def trained_runs(tokenizer, row) -> list[str]:
    """Decode each contiguous run of tokens whose label is not -100."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


@pytest.mark.parametrize("template", ["tokenizer", "chatml", "qwen", "alpaca", "llama-3"])
def test_only_the_assistant_responses_and_their_end_of_turn_are_trained(tiny_tokenizer, template):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # llama-3's <|eot_id|> is not one token of the tiny tokenizer
        result = tokenize_chat(Dataset.from_list([{"messages": MULTI_TURN}]), tiny_tokenizer, max_len=512,
                               template=None if template == "tokenizer" else template)  # fmt: skip
    assert result.template == template
    marker = END_OF_TURN[template]
    assert trained_runs(tiny_tokenizer, result.dataset[0]) == ["42" + marker, "c b a" + marker]


def test_a_tokenizer_shipping_its_own_qwen_template_masks_the_injected_system_prompt(bare_tokenizer):
    bare_tokenizer.chat_template = QWEN
    result = tokenize_chat(Dataset.from_list([{"messages": MULTI_TURN[1:3]}]), bare_tokenizer, max_len=512)
    row = result.dataset[0]
    assert "You are Qwen" in bare_tokenizer.decode(row["input_ids"])
    assert trained_runs(bare_tokenizer, row) == ["42<|im_end|>"]


def test_train_on_prompt_trains_every_token(tiny_tokenizer):
    result = tokenize_chat(Dataset.from_list([{"messages": MULTI_TURN}]), tiny_tokenizer, max_len=512,
                           train_on_prompt=True)  # fmt: skip
    row = result.dataset[0]
    assert row["labels"] == row["input_ids"]
    assert result.trained_tokens == result.total_tokens == len(row["input_ids"])


def test_truncation_is_counted_and_fully_cut_responses_are_reported(tiny_tokenizer, caplog):
    short = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "42"}]}
    long_prompt = {"messages": [{"role": "user", "content": "Sort the numbers 3 1 2. " * 20},
                                {"role": "assistant", "content": "1 2 3"}]}  # fmt: skip
    data = Dataset.from_list([short, long_prompt])
    full = len(tokenize_chat(data, tiny_tokenizer, max_len=4096).dataset[1]["input_ids"])

    result = tokenize_chat(data, tiny_tokenizer, max_len=40)
    assert (result.examples_in, result.examples_out) == (2, 1)
    assert result.truncated_examples == 1 and result.dropped_tokens == full - 40
    assert result.untrainable_examples == 1 and result.dropped_examples == 1
    assert "1 truncated" in result.summary() and "dropped" in result.summary()
    assert result.summary() in caplog.text  # logged too, for callers that keep only the dataset

    kept = tokenize_chat(data, tiny_tokenizer, max_len=40, drop_untrainable=False)
    assert kept.examples_out == 2 and kept.dropped_examples == 0
    assert len(kept.dataset[1]["input_ids"]) == 40
    assert all(label == IGNORE_INDEX for label in kept.dataset[1]["labels"])


def test_builtin_sft_tokenizes_with_every_example_trainable(tiny_tokenizer):
    result = tokenize_chat(load_builtin("arith-sft", n=200), tiny_tokenizer, max_len=256)
    assert result.examples_out == 200 and result.truncated_examples == 0
    assert all(any(label != IGNORE_INDEX for label in labels) for labels in result.dataset["labels"])
    assert result.dataset.column_names == ["input_ids", "attention_mask", "labels"]


def test_a_template_that_is_not_prefix_stable_is_refused(tiny_tokenizer):
    reversed_order = "{% for m in messages | reverse %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(FormatError, match="prefix"):
        tokenize_chat(Dataset.from_list([{"messages": MULTI_TURN}]), tiny_tokenizer, max_len=512,
                      template=reversed_order)  # fmt: skip


def test_wrong_inputs_are_one_line_errors(tiny_tokenizer):
    with pytest.raises(UserInputError, match="messages"):
        tokenize_chat(Dataset.from_list([{"text": "x"}]), tiny_tokenizer, max_len=64)
    with pytest.raises(UserInputError, match="max_len"):
        tokenize_chat(Dataset.from_list([{"messages": MULTI_TURN}]), tiny_tokenizer, max_len=1)
    with pytest.raises(UserInputError, match="text"):
        tokenize_text(Dataset.from_list([{"messages": MULTI_TURN}]), tiny_tokenizer, block_size=64)


def test_text_is_concatenated_with_eos_and_chunked_without_losing_a_token(tiny_tokenizer):
    docs = load_builtin("corpus", n=30)
    blocks = tokenize_text(docs, tiny_tokenizer, block_size=64)
    stream = [t for block in blocks["input_ids"] for t in block]
    expected = []
    for text in docs["text"]:
        expected += tiny_tokenizer(text, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    assert stream == expected
    assert all(len(block) == 64 for block in blocks["input_ids"][:-1])
    assert blocks["labels"] == blocks["input_ids"]


def test_documents_longer_than_max_len_are_split_not_dropped(tiny_tokenizer):
    docs = Dataset.from_list([{"text": "short"}, {"text": "a much longer document " * 10}])
    result = tokenize_documents(docs, tiny_tokenizer, max_len=16)
    lengths = [len(ids) for ids in result.dataset["input_ids"]]
    assert max(lengths) <= 16 and result.examples_out > 2
    assert (
        sum(lengths)
        == result.total_tokens
        == sum(len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in docs["text"])
    )
    assert result.notes and "split" in result.notes[0]
