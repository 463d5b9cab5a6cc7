"""lmforge serve against transformers' own server (`transformers serve --continuous-batching`) and static batching
(transformers `generate` on one padded batch of `concurrency` requests after another), in one run, on the same
models and the same client load.

Models (random weights, built here; nothing is downloaded): "tiny" is the quickstart's Llama (2 layers x 64,
lmforge.quickstart.pipeline.FULL), "76m" a 78.7M-parameter Llama (12 layers x 640, intermediate 2560). Both save a
generation config without an end-of-sequence token, so every server generates exactly --max-tokens tokens
(lmforge is also sent its `ignore_eos`; transformers serve refuses unknown fields).

Load: at each concurrency level, that many clients each stream greedy chat completions of --max-tokens tokens,
one after another, until max(8, 2 x concurrency) are done; TTFT is measured to the first chunk carrying text,
tokens from the usage chunk. For static batching, TTFT is a batch's time to its first generated token. Every level
runs --runs times; the engines take turns within each run (rotated from run to run), so a shared machine's drift
falls on all of them; the table shows the median and range of output tokens/s and the median TTFT p50.

    .venv/bin/python benchmarks/serve_peer.py [--models tiny,76m] [--concurrency 1,16,64] [--runs 3]
                                              [--max-tokens 48] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    },
    "76m": {
        "hidden_size": 640,
        "intermediate_size": 2560,
        "num_hidden_layers": 12,
        "num_attention_heads": 10,
        "num_key_value_heads": 10,
        "tie_word_embeddings": False,
    },
}
ENGINES = ("lmforge", "transformers serve", "static batching")


def build_model(folder: Path, shape: dict[str, Any]) -> Path:
    """A random-weight Llama of `shape` with the bench tokenizer; its generation config has no eos token."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from lmforge.data.tokenizer import train_bpe_tokenizer
    from lmforge.serve.bench import BENCH_PROMPT

    corpus = [BENCH_PROMPT, "The quick brown fox jumps over the lazy dog.", "One two three four five six."] * 20
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=512)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
        bos_token_id=None,
        **shape,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class StaticBatching:
    """transformers generate, one left-padded batch of `concurrency` chat prompts after another."""

    def __init__(self, folder: Path, device: str, max_tokens: int):
        import torch

        from lmforge.generate.load import load_model
        from lmforge.serve.bench import BENCH_PROMPT

        self.loaded = load_model(str(folder), device=device)
        self.max_tokens = max_tokens
        self.ids = self.loaded.tokenizer(
            self.loaded.render_chat([{"role": "user", "content": BENCH_PROMPT}]),
            add_special_tokens=False,
            return_tensors="pt",
        )["input_ids"]
        self.torch = torch

    def run(self, concurrency: int, requests: int) -> dict[str, float]:
        from transformers.generation.streamers import BaseStreamer

        class FirstToken(BaseStreamer):
            def __init__(self) -> None:
                self.calls, self.at = 0, None

            def put(self, value: Any) -> None:
                self.calls += 1
                if self.calls == 2:  # the first call carries the prompt
                    self.at = time.perf_counter()

            def end(self) -> None:
                pass

        ttfts, tokens, started = [], 0, time.perf_counter()
        for first in range(0, requests, concurrency):
            size = min(concurrency, requests - first)
            ids = self.ids.repeat(size, 1).to(self.loaded.device)
            streamer, batch_started = FirstToken(), time.perf_counter()
            with self.torch.inference_mode():
                out = self.loaded.model.generate(
                    input_ids=ids,
                    attention_mask=self.torch.ones_like(ids),
                    do_sample=False,
                    max_new_tokens=self.max_tokens,
                    min_new_tokens=self.max_tokens,
                    streamer=streamer,
                    pad_token_id=self.loaded.tokenizer.pad_token_id,
                )
            tokens += (out.shape[1] - ids.shape[1]) * size
            ttfts += [(streamer.at or time.perf_counter()) - batch_started] * size
        wall = time.perf_counter() - started
        return {"tokens_per_second": tokens / wall, "ttft_p50": statistics.median(ttfts), "errors": 0}


def _http_level(
    url: str, model: str, concurrency: int, requests: int, max_tokens: int, ignore_eos: bool
) -> dict[str, float]:
    from lmforge.serve.bench import run_level

    level = asyncio.run(
        run_level(
            url, model, concurrency, requests, max_tokens=max_tokens, chat=True, ignore_eos=ignore_eos, time_limit_s=600
        )
    )
    if level.errors:
        print(f"    errors from {url}: {level.error_messages}", flush=True)
    if level.output_tokens != (level.requests - level.errors) * max_tokens:
        raise RuntimeError(f"{url}: {level.output_tokens} tokens for {level.requests - level.errors} requests")
    return {
        "tokens_per_second": level.throughput_tokens_per_second,
        "ttft_p50": level.ttft_p50_seconds or 0.0,
        "errors": level.errors,
    }


def bench_model(name: str, folder: Path, args: argparse.Namespace) -> dict[tuple[str, int], list[dict[str, float]]]:
    from lmforge.serve.bench import local_server

    threads = str(args.threads)
    lmforge_command = [
        sys.executable,
        "-m",
        "lmforge",
        "serve",
        str(folder),
        "--port",
        "{port}",
        "--max-batch-size",
        str(max(args.concurrency)),
        "--max-queue",
        "1024",
        "--threads",
        threads,
        "--device",
        args.device,
    ]
    # The paged KV cache sized for the largest level (prompt + reply tokens per request, twice over): left to
    # itself on a CPU, transformers sizes it from free memory and grew to 14.6 GB here until the OOM killer ended it.
    blocks = 2 * max(args.concurrency) * (64 + args.max_tokens) // 32
    peer_command = [
        str(Path(sys.executable).with_name("transformers")),
        "serve",
        str(folder),
        "--continuous-batching",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--device",
        args.device,
        "--log-level",
        "warning",
        "--cb-block-size",
        "32",
        "--cb-num-blocks",
        str(blocks),
    ]
    thread_env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        lmforge_url = stack.enter_context(local_server(str(folder), command=lmforge_command, start_timeout_s=600))
        peer_url = stack.enter_context(
            local_server(str(folder), command=peer_command, env=thread_env, start_timeout_s=900)
        )
        import torch

        torch.set_num_threads(args.threads)
        static = StaticBatching(folder, args.device, args.max_tokens)
        peer_model = json.loads(__import__("httpx").get(f"{peer_url}/v1/models", timeout=30).text)["data"][0]["id"]
        runners = {
            "lmforge": lambda c, n: _http_level(lmforge_url, folder.name, c, n, args.max_tokens, True),
            "transformers serve": lambda c, n: _http_level(peer_url, peer_model, c, n, args.max_tokens, False),
            "static batching": static.run,
        }
        for runner in runners.values():  # warm-up: first requests compile kernels and fill caches
            runner(2, 2)
        for run in range(args.runs):
            order = ENGINES[run % 3 :] + ENGINES[: run % 3]
            for concurrency in args.concurrency:
                requests = max(8, 2 * concurrency)
                for engine in order:
                    result = runners[engine](concurrency, requests)
                    results.setdefault((engine, concurrency), []).append(result)
                    print(
                        f"  {name} run {run + 1} c={concurrency} {engine}: {result['tokens_per_second']:.1f} tok/s, "
                        f"TTFT p50 {result['ttft_p50'] * 1000:.1f} ms, errors {result['errors']}",
                        flush=True,
                    )
    return results


def table(name: str, results: dict[tuple[str, int], list[dict[str, float]]], concurrency: list[int]) -> str:
    lines = [
        f"| {name} | concurrency | tok/s median (range) | x transformers serve | TTFT p50 median ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for level in concurrency:
        peer = statistics.median(r["tokens_per_second"] for r in results[("transformers serve", level)])
        for engine in ENGINES:
            runs = results[(engine, level)]
            rates = [r["tokens_per_second"] for r in runs]
            median = statistics.median(rates)
            lines.append(
                f"| {engine} | {level} | {median:.1f} ({min(rates):.1f}-{max(rates):.1f}) | "
                f"{median / peer:.2f} | {statistics.median(r['ttft_p50'] for r in runs) * 1000:.1f} | "
                f"{sum(r['errors'] for r in runs)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,76m")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, each server and the baseline alike")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    import transformers

    from lmforge.cli.generate import quiet_transformers

    quiet_transformers()
    print(
        f"transformers {transformers.__version__}; {args.runs} runs; {args.max_tokens} tokens per request; "
        f"device {args.device}; torch threads {args.threads}"
    )
    tables = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            folder = build_model(Path(scratch) / f"bench-{name}", MODELS[name])
            tables.append(table(name, bench_model(name, folder, args), args.concurrency))
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
