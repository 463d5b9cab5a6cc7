"""Structured pruning's CPU decode speed where the decoder's matmuls dominate (docs/compress.md).

    .venv/bin/python benchmarks/compress_structured_speed.py runs/quickstart-sft runs/compress-speed

The quickstart model (hidden 64) decodes in Python overhead, so removing heads or channels barely shows
in its speed. This builds a wider decoder shaped like Llama-2 7B (multi-head attention, MLP 2.67× hidden:
attention is a third of each block's weights) from a config (random weights, TOKENIZER's vocabulary: the
speed of a shape does not depend on what the weights learned), prunes it four ways and measures every
result beside it in one run: unstructured 50% (the same shapes: the noise floor), half the attention
heads, and a half and a quarter of the MLP channels. Perplexity and exact match of random weights mean
nothing; size, parameters and decode speed are the figures. One torch thread.

On a shared machine wall-clock speed carries other processes' load, so the script also times every
model's greedy decode in CPU seconds of this process (time.process_time: waiting for the CPU is not
counted), interleaved in rounds like the report, and prints CPU milliseconds per new token.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

# (label, prune options): the same-shape control first
SETTINGS = (
    ("prune-magnitude-unstructured-0.5", {"structure": "none", "sparsity": 0.5}),
    ("prune-magnitude-heads-0.5", {"structure": "heads", "sparsity": 0.5}),
    ("prune-magnitude-mlp-0.5", {"structure": "mlp", "sparsity": 0.5}),
    ("prune-magnitude-mlp-0.25", {"structure": "mlp", "sparsity": 0.25}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokenizer", type=Path, help="A folder with the tokenizer (and chat template) to use.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=12)  # multi-head attention, as Llama-2 7B
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=32)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lmforge.cli.quickstart import _quiet_libraries
    from lmforge.compress import compare, prune, write_quality_report
    from lmforge.compress.report import render_markdown

    _quiet_libraries()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    original = args.out / f"llama-h{args.hidden}-l{args.layers}-random"
    LlamaForCausalLM(config).save_pretrained(original)
    tokenizer.save_pretrained(original)
    results = []
    for label, options in SETTINGS:
        prune(original, args.out / label, method="magnitude", **options)
        results.append((str(args.out / label), label))
    report = compare(original, results, limit=args.limit, runs=args.runs, decode_tokens=args.decode_tokens)
    paths = write_quality_report(report, args.out)
    print(render_markdown(report))
    # Round i times every model once, close together: each model's speed over the original's in the same
    # round cancels much of the load that drifts between rounds.
    print("| model | decode speed ÷ original's in the same round: median (range) over rounds |\n|---|---|")
    for row in report.compressed:
        ratios = [mine / base for mine, base in zip(row.decode_runs, report.original.decode_runs, strict=True)]
        print(f"| {row.method} | {statistics.median(ratios):.2f}× ({min(ratios):.2f}-{max(ratios):.2f}×) |")
    _cpu_time_per_token([str(original), *(path for path, _ in results)], args.runs, args.decode_tokens)
    print(f"report: {paths['markdown']} {paths['plot']}")


def _cpu_time_per_token(paths: list[str], runs: int, tokens: int) -> None:
    """CPU ms per new token of a greedy decode, median (range) over interleaved rounds after a warm-up."""
    import time

    import torch
    from transformers import AutoModelForCausalLM

    models = [AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval() for path in paths]
    prompt = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    spent: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for round_index in range(runs + 1):
            for offset in range(len(models)):
                index = (round_index + offset) % len(models)
                started = time.process_time()
                models[index].generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
                if round_index:
                    spent[index].append((time.process_time() - started) * 1000 / tokens)
    base = statistics.median(spent[0])
    print("| model | CPU ms per new token: median (range) | vs original |\n|---|---|---|")
    for path, times in zip(paths, spent, strict=True):
        median = statistics.median(times)
        print(f"| {Path(path).name} | {median:.2f} ({min(times):.2f}-{max(times):.2f}) | {base / median:.2f}× |")


if __name__ == "__main__":
    main()
