"""Picking llama.cpp's pre-tokenizer: the converter's hash table, else identical regex splits, else refuse."""

from __future__ import annotations

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lmforge.files.convert.pretokenizer import llama_cpp_split, match_pre_tokenizer
from tests.conftest import TINY_CORPUS

LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)  # as Meta-Llama-3's tokenizer.json writes it
QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)


def _bpe(pre_tokenizer) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.train_from_iterator(
        TINY_CORPUS,
        trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>")


@pytest.mark.parametrize(("pattern", "expected"), [(LLAMA3, "llama-bpe"), (QWEN2, "qwen2")])
def test_llama3_and_qwen2_style_splits_are_recognised_by_their_regex(pattern, expected):
    tokenizer = _bpe(
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    )
    match = match_pre_tokenizer(tokenizer)
    assert (match.name, match.how) == (expected, "split")


def test_plain_gpt2_byte_level_is_gpt2_and_digit_groups_differ_from_starcoder():
    assert match_pre_tokenizer(_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False))).name == "gpt-2"
    assert llama_cpp_split("sum 123", "gpt-2") == ["sum", " 123"]
    assert llama_cpp_split("sum 123", "starcoder") == ["sum", " ", "1", "2", "3"]
    assert llama_cpp_split("sum 1234", "llama-bpe") == ["sum", " ", "123", "4"]


def test_a_split_no_llama_cpp_type_has_is_not_matched_and_says_where_it_differs():
    tokenizer = _bpe(
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r" ?\p{N}"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
    )
    match = match_pre_tokenizer(tokenizer)
    assert match.name is None and match.how == "none"
    assert "' 3'" in match.detail  # the tokenizer keeps the space with the digit; no llama.cpp type does


def test_a_normalizer_that_changes_text_is_not_matched():
    from tokenizers import normalizers

    tokenizer = _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False))
    tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert match_pre_tokenizer(tokenizer).name is None
