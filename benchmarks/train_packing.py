"""Useful tokens per second through `lmforge train`: packing vs dynamic padding vs length-grouped batches.

The same SFT data (chats whose answers have a long-tailed, log-normal length, as real SFT data has) trains
the same from-scratch tiny Llama with `run_training` three ways: `data.packing: on` (rows of data.max_len
tokens, attention kept inside each chat), `data.packing: off` (dynamic padding: each batch padded to its
longest chat, what a user of transformers' DataCollatorForSeq2Seq gets) and `data.packing: off` with
`train.length_grouped: true` (transformers' LengthGroupedSampler). Useful tokens are the non-padding tokens
the Trainer counts (`num_input_tokens_seen`, non_padding); a rate is taken between the second and the last
logged step of metrics.jsonl (the first step warms up). The three runs alternate for `--rounds` rounds;
each figure is the median with its range. The headline compares packing with dynamic padding.

    .venv/bin/python benchmarks/train_packing.py [--rounds 3] [--steps 12] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = {
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}
STRATEGIES = {
    "packing": {"data": {"packing": "on"}},
    "dynamic padding": {"data": {"packing": "off"}},
    "length-grouped": {"data": {"packing": "off"}, "train": {"length_grouped": True}},
}


def write_chats(path: Path, count: int, seed: int) -> Path:
    """Chats from the built-in corpus: a question, then an answer of a log-normal number of sentences."""
    from lmforge.data.builtin import load_builtin

    sentences = list(load_builtin("builtin:corpus", n=2000, seed=seed)["text"])
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as file:
        for _ in range(count):
            answer = " ".join(rng.choice(sentences) for _ in range(max(1, min(12, int(rng.lognormvariate(0.3, 0.8))))))
            chat = [{"role": "user", "content": rng.choice(sentences)}, {"role": "assistant", "content": answer}]
            file.write(json.dumps({"messages": chat}) + "\n")
    return path


def tokenizer_dir(root: Path, chats: Path) -> Path:
    from lmforge.data.tokenizer import train_bpe_tokenizer

    texts = [m["content"] for line in chats.read_text().splitlines() for m in json.loads(line)["messages"]]
    tokenizer = train_bpe_tokenizer(texts[:4000], vocab_size=1024)
    tokenizer.save_pretrained(root / "tokenizer")
    return root / "tokenizer"


def one_run(name: str, root: Path, chats: Path, tokenizer: Path, args: argparse.Namespace, index: int) -> float:
    """Useful tokens/s of one training run with strategy `name`."""
    from lmforge.train.callbacks import read_metrics
    from lmforge.train.config import validate_config
    from lmforge.train.run import run_training

    extra = STRATEGIES[name]
    raw: dict[str, Any] = {
        "stage": "sft",
        "out": str(root / f"{name.replace(' ', '-')}-{index}"),
        "model": {"config": MODEL, "tokenizer": str(tokenizer)},
        "data": {"train": str(chats), "max_len": args.max_len, "eval_fraction": 0, **extra.get("data", {})},
        "train": {
            "max_steps": args.steps,
            "micro_batch_size": args.batch_size,
            "learning_rate": 1e-3,
            "lr_scheduler": "constant",
            "precision": "fp32",
            "seed": 0,
            **extra.get("train", {}),
        },
    }
    run_training(validate_config(raw), progress=False)
    records = [r for r in read_metrics(root / raw["out"] / "metrics.jsonl") if "loss" in r]
    first, last = records[1], records[-1]
    return (last["tokens_seen"] - first["tokens_seen"]) / (last["time"] - first["time"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rates: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        chats = write_chats(root / "chats.jsonl", args.examples, seed=0)
        tokenizer = tokenizer_dir(root, chats)
        for index in range(args.rounds):
            for name in STRATEGIES:  # alternating, so drifting machine load hits every strategy alike
                rates[name].append(one_run(name, root, chats, tokenizer, args, index))
    figures = {
        name: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v} for name, v in rates.items()
    }
    headline = figures["packing"]["median"] / figures["dynamic padding"]["median"]
    if args.json:
        print(json.dumps({"args": vars(args), "figures": figures, "packing_vs_dynamic": headline}, indent=2))
        return
    print(
        f"{args.examples} chats, sft, tiny Llama ({MODEL['num_hidden_layers']} layers, hidden {MODEL['hidden_size']}), "
        f"batch {args.batch_size}, max_len {args.max_len}, {args.steps} steps per run, {args.rounds} alternating "
        f"rounds, {args.threads} thread(s), {time.perf_counter() - started:.0f} s in all"
    )
    print("| strategy | useful tokens/s, median | range |")
    print("|---|---:|---:|")
    for name, figure in figures.items():
        print(f"| {name} | {figure['median']:,.0f} | {figure['min']:,.0f}-{figure['max']:,.0f} |")
    print(f"packing: {headline:.2f}x the useful tokens/s of dynamic padding (median of {args.rounds})")


if __name__ == "__main__":
    sys.exit(main())
