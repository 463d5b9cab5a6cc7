"""Useful tokens per second: padding to max_length vs dynamic padding vs length grouping vs packing.

A long-tailed (log-normal) length distribution, as real SFT data has, is trained on by a tiny Llama
on CPU, forward + backward + AdamW step, for the same number of steps of the same batch size with
each strategy. "Useful" tokens are the non-padding ones; the padding ratio is the share of computed
positions that are padding. Packing must reach at least 2x the useful tokens/s of padding to
max_length (the seed's way, §4.2); the script exits 1 if it does not.

    .venv/bin/python benchmarks/data_packing.py [--steps 6] [--batch-size 8] [--max-len 512] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lmforge.data.pack import PackedCollator, PaddingCollator, length_grouped_batches, pack_examples

VOCAB = 512
PAD = 0


def make_examples(count: int, max_len: int, seed: int) -> list[dict[str, list[int]]]:
    """Token sequences with log-normal lengths (median ~55 tokens, long tail up to max_len)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        length = min(max_len, max(8, int(rng.lognormvariate(4.0, 0.8))))
        ids = [rng.randrange(1, VOCAB) for _ in range(length)]
        examples.append({"input_ids": ids, "labels": ids})
    return examples


def batches_for(strategy: str, examples: list[dict], batch_size: int, max_len: int, seed: int) -> list[dict]:
    """The batches each strategy feeds the model, in order."""
    from datasets import Dataset

    if strategy == "pack":
        rows = list(pack_examples(Dataset.from_list(examples), block_size=max_len, seed=seed))
        collate = PackedCollator(pad_token_id=PAD)
        return [collate(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    if strategy == "group":
        order = length_grouped_batches([len(e["input_ids"]) for e in examples], batch_size=batch_size, seed=seed)
    else:
        shuffled = list(range(len(examples)))
        random.Random(seed).shuffle(shuffled)
        order = [shuffled[i : i + batch_size] for i in range(0, len(shuffled), batch_size)]
    collate = PaddingCollator(pad_token_id=PAD, pad_to_length=max_len if strategy == "max_length" else None)
    return [collate([examples[i] for i in group]) for group in order]


def useful_tokens(batch: dict) -> tuple[int, int]:
    """(non-padding tokens, computed positions) of a batch."""
    computed = batch["input_ids"].numel()
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum()), computed
    # Packed rows: padding is only the run a PackedCollator appends, recognisable by its pad ids.
    return int((batch["input_ids"] != PAD).sum()), computed


def run(strategy: str, batches: list[dict], steps: int, max_len: int) -> dict[str, float]:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=max_len, pad_token_id=PAD,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batch: dict) -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up, not timed
    useful = computed = 0
    start = time.perf_counter()
    for batch in batches[1 : steps + 1]:
        step(batch)
        u, c = useful_tokens(batch)
        useful, computed = useful + u, computed + c
    seconds = time.perf_counter() - start
    return {
        "strategy": strategy,
        "steps": min(steps, len(batches) - 1),
        "useful_tokens": useful,
        "computed_tokens": computed,
        "padding_ratio": 1 - useful / computed,
        "seconds": seconds,
        "useful_tokens_per_second": useful / seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    examples = make_examples(args.examples, args.max_len, args.seed)
    lengths = sorted(len(e["input_ids"]) for e in examples)
    results = []
    for strategy in ("max_length", "dynamic", "group", "pack"):
        batches = batches_for(strategy, examples, args.batch_size, args.max_len, args.seed)
        results.append(run(strategy, batches, args.steps, args.max_len))
    baseline = results[0]["useful_tokens_per_second"]
    for result in results:
        result["speedup_vs_max_length"] = result["useful_tokens_per_second"] / baseline
    speedup = results[-1]["speedup_vs_max_length"]

    if args.json:
        print(json.dumps({"args": vars(args), "results": results}, indent=2))
    else:
        p50, p90, p99 = (lengths[int(q * (len(lengths) - 1))] for q in (0.5, 0.9, 0.99))
        print(
            f"{args.examples} examples, lengths p50 {p50} / p90 {p90} / p99 {p99} / max {lengths[-1]} tokens; "
            f"tiny Llama (2 layers, hidden 64), batch {args.batch_size}, {args.steps} timed steps each, "
            f"{args.threads} CPU thread(s), forward+backward+AdamW"
        )
        print("| strategy | padding ratio | useful tokens/s | vs max_length |")
        print("|---|---:|---:|---:|")
        for r in results:
            print(
                f"| {r['strategy']} | {r['padding_ratio']:.1%} | {r['useful_tokens_per_second']:,.0f} | "
                f"{r['speedup_vs_max_length']:.2f}x |"
            )
        print(f"packing reaches {speedup:.2f}x the useful tokens/s of padding to max_length (target >= 2x)")
    return 0 if speedup >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
