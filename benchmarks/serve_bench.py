"""Serving benchmark: `lmforge serve` under a concurrency sweep (1, 4, 16, 64) over loopback, beside the same
model through transformers' generate one request at a time, and the planner's decode bound.

The model is a random-weight Llama (hidden 256, 4 layers) built here, so nothing is downloaded; random weights
do not matter for speed. Target (issue 6): at concurrency 16 the server's total throughput >= 4x the baseline,
with zero errors.

    .venv/bin/python benchmarks/serve_bench.py [--max-tokens 32] [--concurrency 1,4,16,64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lmforge.cli.serve import _console, print_bench
from lmforge.serve.bench import bench_serve, build_bench_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for server and baseline alike (1: fair on a shared machine)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    levels = [int(part) for part in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        model = build_bench_model(Path(folder) / "bench-llama", hidden_size=args.hidden_size, layers=args.layers)
        result = bench_serve(str(model), concurrency=levels, max_tokens=args.max_tokens, threads=args.threads)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    console = _console()
    print_bench(console, result)
    speedup = result.speedup(16)
    errors = sum(level.errors for level in result.levels)
    if speedup is not None:
        verdict = "MET" if speedup >= 4 and errors == 0 else "NOT MET"
        console.print(f"concurrency 16: {speedup:.2f}x the baseline, {errors} errors in the sweep -> target {verdict}")


if __name__ == "__main__":
    main()
