"""Train a small byte-level BPE tokenizer from text, offline.

The quickstart and the tests need a real tokenizer without downloading one; a byte-level BPE
(GPT-2 style) covers any input bytes, so nothing the model is asked to read is ever unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from lmforge.data.templates import CHATML as CHATML_TEMPLATE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, chat_template: str = CHATML_TEMPLATE
) -> PreTrainedTokenizerFast:
    """Return a transformers PreTrainedTokenizerFast trained on `texts` with ChatML special tokens.

    eos is <|im_end|> so generation stops at the end of an assistant turn, as in Qwen's ChatML.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # One token per digit (with its leading space, as " 4"), as Qwen's tokenizer splits digits: numbers
    # then share a small set of tokens, which is what lets a tiny model learn builtin:arith-sft's arithmetic.
    # Training splits digits apart so that no merge ever joins two digits; afterwards GPT-2's plain byte-level
    # split gives exactly the same tokens (" 42" → " 4" "2": the merges stop there) and is a split llama.cpp
    # knows ("gpt-2"), so a GGUF export tokenizes chat text into the same ids in llama.cpp as here
    # (lmforge.files.convert.pretokenizer checks the split; tests/data/test_tokenizer.py the equivalence).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r" ?\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
    )
    wrapped.chat_template = chat_template
    return wrapped
