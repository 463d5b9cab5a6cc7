"""Load benchmark for an OpenAI-compatible server: a concurrency sweep over loopback, beside a one-at-a-time baseline.

Each level keeps `concurrency` streaming requests in flight until `requests` are done (or the level's time limit
passes). Per request: TTFT (first token's chunk), time per output token ((last - first) / (tokens - 1)); per level:
total output tokens / wall seconds. The baseline drives the same model through transformers' `generate`, one
request at a time, with the same prompt and exactly as many new tokens. The planner's decode bound
(lmforge.plan.throughput.inference_speed: bandwidth / bytes read per step) is printed beside them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import UserInputError

if TYPE_CHECKING:
    from lmforge.generate.load import LoadedModel

DEFAULT_CONCURRENCY = (1, 4, 16, 64)
BENCH_PROMPT = "Write a short story about a fox who learns to count."


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    wall_seconds: float
    output_tokens: int
    throughput_tokens_per_second: float
    ttft_p50_seconds: float | None
    ttft_p99_seconds: float | None
    tpot_p50_seconds: float | None
    tpot_p99_seconds: float | None
    error_messages: list[str] = field(default_factory=list)
    # The one-at-a-time baseline measured right before and right after this level, averaged: on a shared
    # machine the load drifts, so each level is compared with the baseline of its own minutes.
    baseline_tokens_per_second: float | None = None


@dataclass
class BaselineResult:
    requests: int
    output_tokens: int
    seconds: float
    throughput_tokens_per_second: float
    runs_tokens_per_second: list[float] = field(default_factory=list)  # before the first level and after each


@dataclass
class DecodeBound:
    weight_bytes: int
    bandwidth_bytes_per_second: float  # measured here: a large tensor copy (read + write)
    decode_tokens_per_second: float  # one sequence: bandwidth / bytes read per step


@dataclass
class ServeBenchResult:
    model: str
    max_tokens: int
    levels: list[LevelResult]
    baseline: BaselineResult | None
    bound: DecodeBound | None

    def speedup(self, concurrency: int) -> float | None:
        level = next((lv for lv in self.levels if lv.concurrency == concurrency), None)
        if level is None or not level.baseline_tokens_per_second:
            return None
        return level.throughput_tokens_per_second / level.baseline_tokens_per_second

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["speedup_vs_baseline"] = {lv.concurrency: self.speedup(lv.concurrency) for lv in self.levels}
        return data


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def _one_request(
    client: Any, url: str, model: str, max_tokens: int, prompt: str, *, chat: bool = False, ignore_eos: bool = True
) -> tuple[float, float, int]:
    """(ttft, time per output token, output tokens) of one streamed completion (or chat completion).

    TTFT is taken at the first chunk that carries text (a chat stream's opening role chunk is not a token), and
    the token count from the usage chunk, so any OpenAI-compatible server is measured alike."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:  # vLLM's extension, which lmforge serves too; OpenAI's API and transformers serve refuse it
        body["ignore_eos"] = True
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    started = time.perf_counter()
    first = last = None
    tokens = chunks = 0
    async with client.stream(
        "POST", f"{url}/v1/{'chat/completions' if chat else 'completions'}", json=body
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread()).decode()[:200]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"].get("message", "stream error"))
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if choice.get("text") or (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
    if first is None or last is None:
        raise RuntimeError("the stream carried no tokens")
    if not tokens:
        raise RuntimeError(f"the stream carried {chunks} chunks but no usage record (stream_options.include_usage)")
    return first - started, (last - first) / max(1, tokens - 1), tokens


async def run_level(
    url: str,
    model: str,
    concurrency: int,
    requests: int,
    *,
    max_tokens: int,
    prompt: str = BENCH_PROMPT,
    api_key: str | None = None,
    time_limit_s: float = 120.0,
    chat: bool = False,
    ignore_eos: bool = True,
) -> LevelResult:
    """Keep `concurrency` requests in flight until `requests` finished or `time_limit_s` passed."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    ttfts: list[float] = []
    tpots: list[float] = []
    errors: list[str] = []
    output_tokens = 0
    issued = 0
    started = time.perf_counter()

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=time_limit_s) as client:

        async def worker() -> None:
            nonlocal issued, output_tokens
            while issued < requests and time.perf_counter() - started < time_limit_s:
                issued += 1
                try:
                    ttft, tpot, tokens = await _one_request(
                        client, url, model, max_tokens, prompt, chat=chat, ignore_eos=ignore_eos
                    )
                except Exception as error:  # a benchmark counts failures, it does not stop on them
                    errors.append(f"{type(error).__name__}: {error}"[:200])
                    continue
                ttfts.append(ttft)
                tpots.append(tpot)
                output_tokens += tokens

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return LevelResult(
        concurrency=concurrency,
        requests=len(ttfts) + len(errors),
        errors=len(errors),
        wall_seconds=wall,
        output_tokens=output_tokens,
        throughput_tokens_per_second=output_tokens / wall if wall else 0.0,
        ttft_p50_seconds=percentile(ttfts, 50),
        ttft_p99_seconds=percentile(ttfts, 99),
        tpot_p50_seconds=percentile(tpots, 50),
        tpot_p99_seconds=percentile(tpots, 99),
        error_messages=sorted(set(errors))[:5],
    )


class Baseline:
    """The same model through transformers' generate, one request at a time, exactly `max_tokens` new tokens."""

    def __init__(self, model_dir: str, *, max_tokens: int, prompt: str = BENCH_PROMPT, threads: int | None = None):
        import torch

        from lmforge.generate.load import load_model

        if threads is not None:
            torch.set_num_threads(threads)
        self.loaded = load_model(model_dir)
        self.max_tokens = max_tokens
        self.ids = torch.tensor([self.loaded.tokenizer(prompt)["input_ids"]], device=self.loaded.device)
        self._generate(2)  # warm-up

    def _generate(self, new_tokens: int) -> int:
        import torch

        with torch.inference_mode():
            out = self.loaded.model.generate(
                input_ids=self.ids,
                attention_mask=torch.ones_like(self.ids),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=self.loaded.tokenizer.pad_token_id,
            )
        return out.shape[1] - self.ids.shape[1]

    def run(self, requests: int) -> BaselineResult:
        started = time.perf_counter()
        total = sum(self._generate(self.max_tokens) for _ in range(requests))
        seconds = time.perf_counter() - started
        return BaselineResult(
            requests=requests, output_tokens=total, seconds=seconds, throughput_tokens_per_second=total / seconds
        )


def measure_bandwidth_bytes_per_second(size_bytes: int = 256 * 2**20, device: str = "cpu") -> float:
    """Memory bandwidth of `device` (host memory, or a GPU's HBM) from the best of three copies of a tensor
    larger than any cache."""
    import torch

    if device.startswith("cuda"):
        size_bytes = max(size_bytes, 2 * 2**30)  # 256 MiB would sit in a large GPU's L2-friendly regime
    source = torch.ones(size_bytes // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(3):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size_bytes / best  # each byte is read once and written once


def decode_bound(model: str | LoadedModel) -> DecodeBound:
    """The planner's decode ceiling for one sequence on this machine's measured bandwidth (`model`: a folder,
    or a model already loaded, such as the baseline's)."""
    from lmforge.generate.load import load_model
    from lmforge.plan.models import spec_from_config
    from lmforge.plan.throughput import inference_speed

    loaded = load_model(model) if isinstance(model, str) else model
    # The loaded model's own config: a run or adapter folder has none of its own (adapters are merged).
    spec = spec_from_config(loaded.model.config.to_dict(), loaded.name)
    weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    params = sum(p.numel() for p in loaded.model.parameters())
    bandwidth = measure_bandwidth_bytes_per_second(device=str(loaded.device))  # where the weights are read from
    speed = inference_speed(
        spec,
        weight_bytes_read=weight_bytes,
        kv_cache_bytes=0,
        compute_params=params,
        batch_size=1,
        prompt_tokens=1,
        tp=1,
        bandwidth_bytes_per_second=bandwidth,
        peak_flops_per_gpu=None,
    )
    return DecodeBound(
        weight_bytes=weight_bytes,
        bandwidth_bytes_per_second=bandwidth,
        decode_tokens_per_second=speed.decode_tokens_per_second or 0.0,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def local_server(
    model_dir: str,
    *,
    max_batch_size: int = 64,
    threads: int | None = None,
    start_timeout_s: float = 120.0,
    command: Sequence[str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`lmforge serve MODEL` in a child process on a free loopback port; stopped (gracefully) afterwards.
    `command` runs another server instead (a list with "{port}" where its port goes), with `env` added."""
    import httpx

    port = free_port()
    if command is not None:
        command = [part.replace("{port}", str(port)) for part in command]
    else:
        command = [
            sys.executable,
            "-m",
            "lmforge",
            "serve",
            model_dir,
            "--port",
            str(port),
            "--max-batch-size",
            str(max_batch_size),
            "--max-queue",
            "1024",
        ]
        if threads is not None:
            command += ["--threads", str(threads)]
    # Not a pipe: a server logging per request would block once a pipe fills. Closed in the finally below.
    log = tempfile.TemporaryFile()  # noqa: SIM115
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise UserInputError(f"the server exited: {log.read().decode(errors='replace')[-500:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise UserInputError(f"the server did not answer /health within {start_timeout_s:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def bench_serve(
    model: str | None = None,
    *,
    url: str | None = None,
    served_name: str | None = None,
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY,
    requests: int | None = None,
    max_tokens: int = 32,
    baseline_requests: int = 4,
    api_key: str | None = None,
    time_limit_s: float = 120.0,
    threads: int | None = None,
    on_level: Any = None,
) -> ServeBenchResult:
    """Sweep `concurrency` against `url` (or a server started here for local `model`), beside the baseline.

    `requests` per level defaults to max(8, 2 x concurrency). The baseline (`baseline_requests` one-at-a-time
    requests before the first level and after each) and the decode bound need `model`.
    """
    if model is None and url is None:
        raise UserInputError("give a MODEL folder (a server is started for it) or --url of a running server")
    if any(c < 1 for c in concurrency):
        raise UserInputError("concurrency levels must be >= 1")

    reference = Baseline(str(model), max_tokens=max_tokens, threads=threads) if model is not None else None
    runs: list[BaselineResult] = []

    def sweep(target: str, name: str) -> list[LevelResult]:
        levels = []
        if reference is not None:
            runs.append(reference.run(baseline_requests))
        for level in concurrency:
            count = requests or max(8, 2 * level)
            result = asyncio.run(
                run_level(target, name, level, count, max_tokens=max_tokens, api_key=api_key, time_limit_s=time_limit_s)
            )
            if reference is not None:  # the server idles meanwhile
                runs.append(reference.run(baseline_requests))
                result.baseline_tokens_per_second = (
                    runs[-2].throughput_tokens_per_second + runs[-1].throughput_tokens_per_second
                ) / 2
            levels.append(result)
            if on_level is not None:
                on_level(result)
        return levels

    if url is not None:
        name = served_name or _first_model(url, api_key)
        levels = sweep(url.rstrip("/"), name)
    else:
        with local_server(str(model), max_batch_size=max(concurrency), threads=threads) as local:
            name = served_name or _first_model(local, api_key)
            levels = sweep(local, name)
    baseline = bound = None
    if reference is not None:
        tokens, seconds = sum(r.output_tokens for r in runs), sum(r.seconds for r in runs)
        baseline = BaselineResult(
            requests=sum(r.requests for r in runs),
            output_tokens=tokens,
            seconds=seconds,
            throughput_tokens_per_second=tokens / seconds,
            runs_tokens_per_second=[r.throughput_tokens_per_second for r in runs],
        )
        bound = decode_bound(reference.loaded)  # the model the baseline already loaded
    return ServeBenchResult(model=name, max_tokens=max_tokens, levels=levels, baseline=baseline, bound=bound)


def _first_model(url: str, api_key: str | None) -> str:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    data = httpx.get(f"{url}/v1/models", headers=headers, timeout=30).json().get("data") or []
    if not data:
        raise UserInputError(f"{url}/v1/models lists no model")
    return data[0]["id"]


def build_bench_model(folder: Path, *, hidden_size: int = 256, layers: int = 4) -> Path:
    """A random-weight Llama big enough per token that batching matters on a CPU (default hidden 256, 4 layers),
    with a trained byte-level BPE tokenizer: no download."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmforge.data.tokenizer import train_bpe_tokenizer

    corpus = [BENCH_PROMPT, "The quick brown fox jumps over the lazy dog.", "One two three four five six."] * 20
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=512)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden_size // 64),
        num_key_value_heads=max(1, hidden_size // 64),
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


BENCH_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_bench_adapter(base_dir: Path, folder: Path, *, seed: int, rank: int = 8) -> Path:
    """A random (non-zero) LoRA adapter of `rank` on every projection of the bench model, saved by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(BENCH_LORA_TARGETS), init_lora_weights=False),
    )
    model.save_pretrained(str(folder))
    return folder
