"""LoRA adapters in `lmforge serve`: memory of adapters sharing one base vs one merged copy each, and the decode
speed an unmerged adapter costs, side by side in one run.

The base is the random-weight bench Llama (lmforge.serve.bench.build_bench_model); each adapter is a random LoRA
(rank 8 on q, k, v, o, gate, up, down). Nothing is downloaded.

    .venv/bin/python benchmarks/serve_adapters.py [--adapters 3] [--hidden-size 256] [--layers 4] [--tokens 32]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path


def _parameter_bytes(models) -> int:
    """Bytes of distinct parameter storage across `models` (a shared tensor counts once)."""
    seen, total = set(), 0
    for loaded in models:
        for parameter in loaded.model.parameters():
            if parameter.data_ptr() not in seen:
                seen.add(parameter.data_ptr())
                total += parameter.numel() * parameter.element_size()
    return total


def _decode_seconds(engine, name: str, prompt_ids: list[int], tokens: int, requests: int) -> float:
    """Wall time for `requests` concurrent greedy requests of exactly `tokens` tokens to model `name`."""
    from lmforge.generate.sampling import SamplingParams
    from lmforge.serve.engine import Request

    done = [threading.Event() for _ in range(requests)]
    params = SamplingParams(temperature=0, max_new_tokens=tokens)
    started = time.perf_counter()
    for event in done:
        engine.submit(
            Request(
                name,
                prompt_ids,
                params,
                lambda e, event=event: event.set() if e.finish_reason else None,
                ignore_eos=True,
            )
        )
    for event in done:
        event.wait(600)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()

    import torch

    from lmforge.generate.generation import encode_prompt
    from lmforge.generate.load import load_model
    from lmforge.serve.app import load_engine
    from lmforge.serve.bench import BENCH_PROMPT, build_bench_adapter, build_bench_model
    from lmforge.serve.engine import Engine

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        base_dir = build_bench_model(root / "base", hidden_size=args.hidden_size, layers=args.layers)
        adapters = [(f"a{i}", str(build_bench_adapter(base_dir, root / f"a{i}", seed=i))) for i in range(args.adapters)]
        shared = load_engine(str(base_dir), adapters=adapters)
        merged = {"base": load_model(str(base_dir))} | {
            name: load_model(str(base_dir), adapter=path) for name, path in adapters
        }
        base_bytes = _parameter_bytes([merged["base"]])
        shared_bytes = _parameter_bytes(shared.models.values())
        merged_bytes = _parameter_bytes(merged.values())
        print(
            f"base {args.layers} layers x {args.hidden_size}: {base_bytes:,} parameter bytes; {args.adapters} "
            f"LoRA adapters (r=8, all projections)"
        )
        print(f"  adapters sharing the base: {shared_bytes:,} bytes ({shared_bytes / base_bytes:.2f}x the base)")
        print(f"  one merged copy each:      {merged_bytes:,} bytes ({merged_bytes / base_bytes:.2f}x the base)")

        prompt = encode_prompt(merged["base"], BENCH_PROMPT)
        copies = Engine(merged, max_batch_size=args.requests)
        timings = {}
        for label, engine in (("merged copy", copies), ("shared, adapter on", shared)):
            engine.start()
            _decode_seconds(engine, "a0", prompt, 4, 1)  # warm-up
            timings[label] = _decode_seconds(engine, "a0", prompt, args.tokens, args.requests)
            engine.stop()
        tokens = args.tokens * args.requests
        for label, seconds in timings.items():
            print(f"  {label:<20} {tokens / seconds:8.1f} tokens/s ({args.requests} requests x {args.tokens} tokens)")
        print(
            f"  unmerged adapter speed: {timings['merged copy'] / timings['shared, adapter on']:.2f}x the merged copy"
        )


if __name__ == "__main__":
    main()
