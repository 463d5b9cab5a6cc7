"""Packing keeps examples apart (same loss as unpacked), batching groups lengths, collators pad right."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset

from lmforge.data.builtin import load_builtin
from lmforge.data.pack import (
    PackedCollator,
    PaddingCollator,
    length_grouped_batches,
    pack_examples,
    padding_ratio,
    plan_bins,
)
from lmforge.data.tokenize import IGNORE_INDEX, tokenize_chat
from lmforge.errors import UserInputError


@pytest.fixture(scope="module")
def sft_tokens(tiny_tokenizer):
    return tokenize_chat(load_builtin("arith-sft", n=12), tiny_tokenizer, max_len=128).dataset


def test_bins_hold_every_example_once_and_never_overflow():
    lengths = [random.Random(i).randint(1, 100) for i in range(300)]
    bins = plan_bins(lengths, 128)
    assert sorted(i for b in bins for i in b) == list(range(300))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    assert len(bins) <= sum(lengths) / 128 * 1.15 + 1  # close to the lower bound


def test_an_example_longer_than_the_block_is_refused():
    with pytest.raises(UserInputError, match="longer than block_size 8"):
        plan_bins([3, 9], 8)


def test_packed_rows_keep_tokens_reset_positions_and_mask_each_first_label(sft_tokens):
    packed = pack_examples(sft_tokens, block_size=128)
    assert len(packed) < len(sft_tokens)
    assert sorted(t for row in packed["input_ids"] for t in row) == sorted(
        t for row in sft_tokens["input_ids"] for t in row
    )
    for ids, labels, positions in zip(packed["input_ids"], packed["labels"], packed["position_ids"]):
        assert len(ids) == len(labels) == len(positions) <= 128
        starts = [i for i, p in enumerate(positions) if p == 0]
        assert starts[0] == 0 and all(labels[i] == IGNORE_INDEX for i in starts)
        assert all(positions[i] == positions[i - 1] + 1 for i in range(1, len(positions)) if i not in starts)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_and_unpacked_losses_match(tiny_llama_dir, tiny_tokenizer, sft_tokens, attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation=attention).eval()
    unpacked = PaddingCollator(tiny_tokenizer.pad_token_id)(list(sft_tokens))
    packed_rows = pack_examples(sft_tokens, block_size=128)
    packed = PackedCollator(tiny_tokenizer.pad_token_id)(list(packed_rows))
    flat = PackedCollator(tiny_tokenizer.pad_token_id, flatten=True)(list(packed_rows))
    assert packed["input_ids"].shape[0] < unpacked["input_ids"].shape[0] and flat["input_ids"].shape[0] == 1
    with torch.no_grad():
        reference = model(**unpacked).loss.item()
        assert model(**packed).loss.item() == pytest.approx(reference, abs=1e-5)
        assert model(**flat).loss.item() == pytest.approx(reference, abs=1e-5)
        # Why batches carry use_cache=False: with a cache, transformers ignores the position_ids
        # boundaries and examples attend to each other.
        leaky = {k: v for k, v in packed.items() if k != "use_cache"}
        assert model(**leaky, use_cache=True).loss.item() != pytest.approx(reference, abs=1e-5)


def test_packed_and_unpacked_gradients_match(tiny_llama_dir, tiny_tokenizer, sft_tokens):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="sdpa")
    grads = []
    for batch in (
        PaddingCollator(tiny_tokenizer.pad_token_id)(list(sft_tokens)),
        PackedCollator(tiny_tokenizer.pad_token_id)(list(pack_examples(sft_tokens, block_size=128))),
    ):
        model.zero_grad()
        model(**batch).loss.backward()
        grads.append(model.model.embed_tokens.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_length_grouped_batches_cover_everything_and_cut_padding():
    rng = random.Random(0)
    lengths = [int(rng.lognormvariate(3, 1)) + 1 for _ in range(2000)]
    batches = length_grouped_batches(lengths, batch_size=16, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(2000))
    assert length_grouped_batches(lengths, batch_size=16, seed=0) == batches

    def ratio(groups):
        return padding_ratio(lengths, [max(lengths[i] for i in g) for g in groups for _ in g])

    random_batches = [list(range(i, min(i + 16, 2000))) for i in range(0, 2000, 16)]
    assert ratio(batches) < 0.2 < 0.5 < ratio(random_batches)


def test_padding_collator_pads_right_with_masked_labels():
    features = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    dynamic = PaddingCollator(pad_token_id=0)(features)
    assert dynamic["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert dynamic["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert dynamic["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert PaddingCollator(pad_token_id=0, pad_to_length=6)(features)["input_ids"].shape == (2, 6)
    assert PaddingCollator(pad_token_id=0, pad_to_multiple_of=4)(features)["input_ids"].shape == (2, 4)
    with pytest.raises(UserInputError, match="pad_to_length 2"):
        PaddingCollator(pad_token_id=0, pad_to_length=2)(features)


def test_packed_collator_pads_short_rows_as_their_own_sequence():
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [-100, 2, -100, 4], "position_ids": [0, 1, 0, 1]},
            {"input_ids": [5, 6], "labels": [-100, 6], "position_ids": [0, 1]}]  # fmt: skip
    batch = PackedCollator(pad_token_id=0)(rows)
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1], [0, 1, 0, 1]]
    assert batch["labels"].tolist()[1] == [-100, 6, -100, -100]
    assert "attention_mask" not in batch and batch["use_cache"] is False
    plain = PackedCollator(pad_token_id=0, flatten=True)([{"input_ids": [1, 2]}, {"input_ids": [3, 4, 5]}])
    assert plain["position_ids"].tolist() == [[0, 1, 0, 1, 2]]
    assert plain["labels"].tolist() == [[-100, 2, -100, 4, 5]]


def test_pack_examples_needs_token_ids():
    with pytest.raises(UserInputError, match="input_ids"):
        pack_examples(Dataset.from_list([{"text": "x"}]), block_size=16)
