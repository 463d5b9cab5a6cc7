"""The offline BPE tokenizer the quickstart trains on builtin:corpus."""

from __future__ import annotations

from lmforge.data.builtin import load_builtin
from lmforge.data.tokenizer import SPECIAL_TOKENS, train_bpe_tokenizer


def test_a_tokenizer_trained_on_the_builtin_corpus_round_trips_any_text():
    tokenizer = train_bpe_tokenizer(load_builtin("corpus", n=300)["text"], vocab_size=512)
    assert len(tokenizer) <= 512
    for text in ["What is 12 plus 30? 42.", "Reverse the letters z e l.", "naïve café 東京 🙂\ttabs\n"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text  # byte-level: nothing is ever unknown


def test_special_tokens_are_single_ids_and_eos_ends_an_assistant_turn(tiny_tokenizer):
    for token in SPECIAL_TOKENS:
        assert len(tiny_tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    assert tiny_tokenizer.eos_token == "<|im_end|>" and tiny_tokenizer.pad_token == "<|pad|>"
    assert tiny_tokenizer.pad_token_id != tiny_tokenizer.eos_token_id
    text = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                              add_generation_prompt=True)  # fmt: skip
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_training_on_task_text_gives_shorter_sequences_than_bytes():
    corpus = load_builtin("corpus", n=300)["text"]
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=512)
    sample = " ".join(corpus[:20])
    assert len(tokenizer(sample)["input_ids"]) < len(sample.encode()) / 2


def test_gpt2_split_after_training_gives_the_same_ids_as_the_digit_split_it_was_trained_with():
    """The quickstart tokenizer ships GPT-2's split (one llama.cpp knows, so GGUF exports tokenize alike)
    but was trained with digits split apart; no merge joins two digits, so every text gets the same ids."""
    from tokenizers import Regex, pre_tokenizers

    from lmforge.files.convert.pretokenizer import match_pre_tokenizer

    corpus = load_builtin("corpus", n=300)["text"]
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=512)
    trained_split = train_bpe_tokenizer(corpus, vocab_size=512)
    trained_split.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r" ?\p{N}"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    chats = [tokenizer.apply_chat_template(m, tokenize=False) for m in load_builtin("arith-sft", n=200)["messages"]]
    tricky = ["3.14 and 2,000,000 or 1234567", "x2 y33 $5 2km 10%", "  42\n\n7\t8", "a1b2c3 ½ ٣ 12th"]
    for text in [*corpus, *chats, *tricky]:
        assert tokenizer(text)["input_ids"] == trained_split(text)["input_ids"], text
    assert match_pre_tokenizer(tokenizer).name == "gpt-2"
