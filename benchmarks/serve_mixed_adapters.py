"""Requests for several LoRA adapters in `lmforge serve`: one mixed batch (peft's adapter_names, every adapter's
rows in the same forward) against taking turns (a batch per adapter, one forward each per step), in one run.

The base is the random-weight bench Llama (lmforge.serve.bench.build_bench_model) with random rank-8 LoRA adapters
on every projection; nothing is downloaded. The same loaded models serve both engines; each run submits the same
requests at once (the base and every adapter alike, greedy, exactly --tokens tokens each) and times them to the
last token. The two engines alternate, so a shared machine's drift hits both; median and range over --runs.

    .venv/bin/python benchmarks/serve_mixed_adapters.py [--adapters 3] [--per-name 4] [--tokens 32] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path


def _run(engine, requests: list[tuple[str, list[int]]], tokens: int) -> float:
    """Seconds until every request (model name, prompt ids) has its `tokens` tokens."""
    from lmforge.generate.sampling import SamplingParams
    from lmforge.serve.engine import Request

    done = [threading.Event() for _ in requests]
    params = SamplingParams(temperature=0, max_new_tokens=tokens)
    started = time.perf_counter()
    for (name, prompt), event in zip(requests, done):
        engine.submit(
            Request(
                name, prompt, params, lambda e, event=event: event.set() if e.finish_reason else None, ignore_eos=True
            )
        )
    for event in done:
        event.wait(600)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--per-name", type=int, default=4, help="requests per served name (the base and each adapter)")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from lmforge.generate.generation import encode_prompt
    from lmforge.serve.app import load_engine
    from lmforge.serve.bench import BENCH_PROMPT, build_bench_adapter, build_bench_model
    from lmforge.serve.engine import Engine

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        base_dir = build_bench_model(root / "base", hidden_size=args.hidden_size, layers=args.layers)
        adapters = [(f"a{i}", str(build_bench_adapter(base_dir, root / f"a{i}", seed=i))) for i in range(args.adapters)]
        models = load_engine(str(base_dir), adapters=adapters, served_model_name="base").models
        names = list(models)
        prompt = encode_prompt(models["base"], BENCH_PROMPT)
        requests = [(name, prompt) for _ in range(args.per_name) for name in names]
        batch = len(requests)
        engines = {
            "mixed batch": Engine(models, max_batch_size=batch, mixed_adapters=True),
            "taking turns": Engine(models, max_batch_size=batch, mixed_adapters=False),
        }
        seconds: dict[str, list[float]] = {label: [] for label in engines}
        for engine in engines.values():
            engine.start()
            _run(engine, requests[: len(names)], 4)  # warm-up
        for _ in range(args.runs):
            for label, engine in engines.items():
                seconds[label].append(_run(engine, requests, args.tokens))
        for engine in engines.values():
            engine.stop()

    tokens = batch * args.tokens
    print(
        f"bench Llama {args.layers} layers x {args.hidden_size}, {args.adapters} LoRA adapters (r=8, all "
        f"projections) + the base; {args.per_name} requests per name ({batch} at once) x {args.tokens} tokens; "
        f"torch threads {args.threads}; {args.runs} runs, alternating"
    )
    print(f"{'engine':<14} {'tok/s median':>13} {'range':>17} {'rows per step':>14} {'decode steps':>13}")
    for label, engine in engines.items():
        rates = [tokens / s for s in seconds[label]]
        stats = engine.stats
        print(
            f"{label:<14} {statistics.median(rates):13.1f} {min(rates):8.1f}-{max(rates):<8.1f} "
            f"{stats.mean_batch_sequences:14.1f} {stats.decode_steps:13d}"
        )
    ratio = statistics.median(seconds["taking turns"]) / statistics.median(seconds["mixed batch"])
    print(f"mixed batch: {ratio:.2f}x the throughput of taking turns (ratio of median times)")


if __name__ == "__main__":
    main()
