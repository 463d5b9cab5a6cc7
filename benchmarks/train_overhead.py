"""lmforge training step time vs a plain PyTorch loop on the same tiny model and batches.

Both train the same from-scratch Llama (same seed, same initial weights) on the same token blocks
(builtin:corpus cut into data.max_len blocks), with AdamW, grad clipping and fp32 on the CPU.
A step of lmforge is the interval between consecutive metrics.jsonl records (logged every step), so it
includes everything lmforge adds per step (callbacks, metrics file, progress, token counting); model
loading and tokenization are excluded. On a shared, noisy machine the figure is the MEDIAN step time,
and plain and lmforge runs alternate `--rounds` times; the spread of the plain medians shows the noise.

    .venv/bin/python benchmarks/train_overhead.py [--steps 30] [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODEL = {
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}
BATCH, BLOCK = 8, 128


def tokenizer_dir(root: Path) -> Path:
    from lmforge.data.builtin import load_builtin
    from lmforge.data.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(load_builtin("builtin:corpus", n=500)["text"], vocab_size=512)
    tokenizer.save_pretrained(root / "tokenizer")
    return root / "tokenizer"


def plain_loop(tokenizer_path: Path, steps: int, seed: int) -> float:
    """Seconds per optimizer step of a hand-written loop: forward, backward, clip, AdamW step."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from lmforge.data.builtin import load_builtin
    from lmforge.data.tokenize import tokenize_text

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    blocks = tokenize_text(load_builtin("builtin:corpus", n=2000, seed=seed), tokenizer, block_size=BLOCK)
    blocks = [b for b in blocks["input_ids"] if len(b) == BLOCK]
    raw = dict(MODEL)
    config = transformers.AutoConfig.for_model(
        raw.pop("model_type"),
        **raw,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    timings = []
    for step in range(steps):
        batch = torch.tensor(blocks[(step * BATCH) % (len(blocks) - BATCH) :][:BATCH])
        start = time.perf_counter()
        loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def lmforge_run(tokenizer_path: Path, root: Path, steps: int, seed: int) -> float:
    """Median seconds per step of run_training, from the step-to-step intervals of metrics.jsonl."""
    from lmforge.train.callbacks import read_metrics
    from lmforge.train.config import validate_config
    from lmforge.train.run import run_training

    config = validate_config(
        {
            "stage": "pretrain",
            "out": str(root / f"run-{time.time_ns()}"),
            "model": {"config": MODEL, "tokenizer": str(tokenizer_path)},
            # packing off: the same GPT-recipe blocks the plain loop trains on
            "data": {
                "train": "builtin:corpus",
                "max_examples": 2000,
                "max_len": BLOCK,
                "eval_fraction": 0,
                "packing": "off",
            },
            "train": {
                "max_steps": steps,
                "micro_batch_size": BATCH,
                "learning_rate": 1e-3,
                "lr_scheduler": "constant",
                "precision": "fp32",
                "seed": seed,
            },
        }
    )
    result = run_training(config, progress=False)
    times = [r["time"] for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss" in r]
    return statistics.median(b - a for a, b in itertools.pairwise(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    plain_runs, lmforge_runs = [], []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        tokenizer_path = tokenizer_dir(root)
        for _ in range(args.rounds):
            plain_runs.append(plain_loop(tokenizer_path, args.steps, args.seed))
            lmforge_runs.append(lmforge_run(tokenizer_path, root, args.steps, args.seed))
    plain, ours = statistics.median(plain_runs), statistics.median(lmforge_runs)
    figures = {
        "threads": args.threads,
        "steps": args.steps,
        "rounds": args.rounds,
        "micro_batch": BATCH,
        "block_tokens": BLOCK,
        "plain_seconds_per_step": round(plain, 4),
        "plain_range_seconds": [round(min(plain_runs), 4), round(max(plain_runs), 4)],
        "lmforge_seconds_per_step": round(ours, 4),
        "lmforge_range_seconds": [round(min(lmforge_runs), 4), round(max(lmforge_runs), 4)],
        "overhead_percent": round(100 * (ours / plain - 1), 1),
        # Each round's own overhead (its lmforge median over its plain median): the spread of the claim itself.
        "overhead_percent_by_round": [
            round(100 * (o / p - 1), 1) for p, o in zip(plain_runs, lmforge_runs, strict=True)
        ],
        "plain_tokens_per_second": round(BATCH * BLOCK / plain),
        "lmforge_tokens_per_second": round(BATCH * BLOCK / ours),
    }
    json.dump(figures, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
