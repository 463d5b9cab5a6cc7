"""The MLM collator: masks are a function of the run seed and the batch, so a resumed run masks alike."""

from __future__ import annotations

from lmforge.train.mlm import masking_collator


def test_masks_follow_the_batch_not_the_global_rng(tiny_bert_dir):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = [" ".join(["word"] * 60 + [str(n) for n in range(n, n + 40)]) for n in range(8)]
    batch = [{"input_ids": ids} for ids in tokenizer(texts)["input_ids"]]
    collate = masking_collator(tokenizer, 0.15, seed=0)
    first = collate(batch)
    torch.manual_seed(123)  # the global RNG no longer decides
    again = collate(batch)
    assert torch.equal(first["labels"], again["labels"]) and torch.equal(first["input_ids"], again["input_ids"])
    other_seed = masking_collator(tokenizer, 0.15, seed=1)(batch)
    reordered = collate(batch[::-1])
    assert not torch.equal(other_seed["labels"], first["labels"])
    assert not torch.equal(reordered["labels"], first["labels"].flip(0))  # a new batch draws new masks
    share = (first["labels"] != -100).float().mean().item()
    assert 0.10 < share < 0.20  # mlm_probability 0.15 of the tokens
