"""Train a small byte-level BPE tokenizer from text, offline.

The quickstart and the tests need a real tokenizer without downloading one; a byte-level BPE
(GPT-2 style) covers any input bytes, so nothing the model is asked to read is ever unknown.
"""

from __future__ import annotations

from collections.abc import Iterable

from lmforge.data.templates import CHATML as CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512, chat_template: str = CHATML_TEMPLATE):
    """Return a transformers PreTrainedTokenizerFast trained on `texts` with ChatML special tokens.

    eos is <|im_end|> so generation stops at the end of an assistant turn, as in Qwen's ChatML.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # One token per digit, as StarCoder's and SmolLM's tokenizers split them: numbers then share ten
    # tokens, which is what lets a tiny model learn builtin:arith-sft's arithmetic. This exact split
    # (digits, then GPT-2's regex) is one llama.cpp knows ("starcoder"), so a GGUF export tokenizes chat
    # text into the same ids in llama.cpp as here (lmforge.files.convert.pretokenizer checks it).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
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
