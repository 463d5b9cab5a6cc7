"""`lmforge serve` (the OpenAI-compatible server) and `lmforge bench serve` (its load benchmark)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lmforge.cli.generate import DeviceMapOpt, QuantOpt, TrustPickleOpt, TrustRemoteCodeOpt

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from lmforge.serve.bench import ServeBenchResult

ENGINES = ("transformers", "vllm")
API_KEY_ENV = "LMFORGE_API_KEY"


def serve_command(
    model: Annotated[
        str,
        typer.Argument(
            help="A model folder, a training run folder, a LoRA adapter folder, or a hub "
            "id org/name[@revision] (downloaded into the HF cache)."
        ),
    ],
    adapter: Annotated[
        list[str] | None, typer.Option(help="NAME=DIR: a LoRA adapter served as model NAME (repeatable).")
    ] = None,
    merge_adapters: Annotated[
        bool,
        typer.Option(
            "--merge-adapters",
            help="Give each adapter its own merged copy "
            "of the model: faster decoding, one model's memory per adapter "
            "(default: all adapters share one copy).",
        ),
    ] = False,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0 exposes it to the network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            envvar=API_KEY_ENV,
            help="Require 'Authorization: Bearer KEY' on every route but /health (repeatable: several keys).",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="Allowed browser origin (repeatable; '*' for any).")
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="The name clients use for MODEL (default: its folder name or hub id).")
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Most sequences decoded together (default 16).")] = None,
    max_queue: Annotated[
        int | None, typer.Option(help="Most requests waiting; beyond it the server answers 429 (default 256).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds a request may take, queue included (default 600).")
    ] = None,
    tp: Annotated[
        int | None,
        typer.Option(
            "--tp", help="Tensor parallelism over this many GPUs (--engine vllm: its --tensor-parallel-size)."
        ),
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="Serve a shorter context than the model's (prompt + reply tokens).")
    ] = None,
    engine: Annotated[
        str, typer.Option(help="transformers (CPU or GPU) or vllm (needs vllm and a CUDA GPU).")
    ] = "transformers",
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: cuda when available).")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32, bfloat16, float16 (default: float32 on CPU).")] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads (default: torch's choice, one per core).")
    ] = None,
    device_map: DeviceMapOpt = None,
    quant: QuantOpt = None,
    max_body_bytes: Annotated[
        int | None, typer.Option(help="Largest request body in bytes; beyond it HTTP 413 (default: 8 MiB).")
    ] = None,
    max_prompt_chars: Annotated[
        int | None,
        typer.Option(
            help="Most prompt characters per request, checked before "
            "tokenizing; beyond it HTTP 400 (default: 32 per token "
            "of the model's context length)."
        ),
    ] = None,
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
) -> None:
    """Serve MODEL over the OpenAI API: /v1/chat/completions, /v1/completions, /v1/models, /tokenize, /metrics."""
    import os

    from lmforge.errors import UserInputError
    from lmforge.serve.app import check_api_keys
    from lmforge.serve.launch import parse_adapters

    adapters = parse_adapters(adapter or [])
    # click ignores an empty environment variable, which would silently serve without keys.
    check_api_keys(api_key if api_key is not None else ([""] if os.environ.get(API_KEY_ENV) == "" else []))
    if engine not in ENGINES:
        raise UserInputError(f"--engine {engine!r}: choose transformers or vllm")
    # Only what the user gave: the vLLM bridge refuses what it cannot forward, and each engine keeps its defaults.
    given: dict[str, Any] = {
        key: value
        for key, value in {
            "served_model_name": served_model_name,
            "max_batch_size": max_batch_size,
            "max_queue": max_queue,
            "request_timeout_s": timeout,
            "device": device,
            "dtype": dtype,
            "threads": threads,
            "device_map": device_map,
            "merge_adapters": merge_adapters or None,
            "max_body_bytes": max_body_bytes,
            "max_prompt_chars": max_prompt_chars,
            "tp": tp,
            "max_model_len": max_model_len,
            "quant": quant,
        }.items()
        if value is not None
    }
    if engine == "vllm":
        from lmforge.serve.vllm import serve_with_vllm

        raise typer.Exit(
            serve_with_vllm(
                model,
                adapters=adapters,
                host=host,
                port=port,
                api_keys=api_key or [],
                cors_origins=cors_origin or [],
                trust_pickle=trust_pickle,
                trust_remote_code=trust_remote_code,
                **given,
            )
        )
    from lmforge.cli.generate import quiet_transformers
    from lmforge.serve.launch import serve

    quiet_transformers()

    def ready(names: list[str]) -> None:
        typer.echo(
            f"Serving {', '.join(names)} on http://{host}:{port}/v1 (Ctrl-C stops after in-flight requests)", err=True
        )

    serve(
        model,
        adapters=adapters,
        host=host,
        port=port,
        api_keys=api_key or [],
        cors_origins=cors_origin or [],
        on_ready=ready,
        trust_pickle=trust_pickle,
        trust_remote_code=trust_remote_code,
        **given,
    )


def bench_serve_command(
    model: Annotated[
        str | None,
        typer.Argument(
            help="A local model folder: a server is started for it, and the one-at-a-time baseline runs on it."
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Benchmark this running server instead (e.g. http://127.0.0.1:8000).")
    ] = None,
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrency levels.")] = "1,4,16,64",
    requests: Annotated[int | None, typer.Option(help="Requests per level (default max(8, 2 x concurrency)).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Output tokens per request (eos ignored).")] = 32,
    baseline_requests: Annotated[
        int,
        typer.Option(
            help="One-at-a-time baseline requests before the first level "
            "and after each (x base compares with its neighbours)."
        ),
    ] = 4,
    api_key: Annotated[str | None, typer.Option(envvar="LMFORGE_API_KEY", help="Bearer key for --url.")] = None,
    time_limit: Annotated[float, typer.Option(help="Seconds per level at most.")] = 120.0,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads for the started server and the baseline alike.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Concurrency sweep (TTFT, time per output token, throughput at p50/p99, errors) beside transformers'
    generate one request at a time, and the planner's decode bound."""
    from lmforge.cli.generate import quiet_transformers
    from lmforge.errors import UserInputError
    from lmforge.serve.bench import bench_serve

    try:
        levels = [int(part) for part in concurrency.split(",") if part.strip()]
    except ValueError:
        raise UserInputError(f"--concurrency {concurrency!r}: write comma-separated integers like 1,4,16") from None
    quiet_transformers()
    console = _console()
    progress = (
        None
        if as_json
        else (
            lambda lv: console.print(
                f"concurrency {lv.concurrency}: {lv.throughput_tokens_per_second:.1f} tok/s, {lv.errors} errors"
            )
        )
    )
    result = bench_serve(
        model,
        url=url,
        concurrency=levels,
        requests=requests,
        max_tokens=max_tokens,
        baseline_requests=baseline_requests,
        api_key=api_key,
        time_limit_s=time_limit,
        threads=threads,
        on_level=progress,
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    print_bench(console, result)


def print_bench(console: Console, result: ServeBenchResult) -> None:
    """The sweep table, the baseline runs, and the planner's decode bound beside the measured decode speed."""
    console.print(_table(result))
    if result.baseline:
        console.print(
            f"baseline (transformers generate, one request at a time): "
            f"{result.baseline.throughput_tokens_per_second:.1f} tok/s pooled over {result.baseline.requests} "
            f"requests; per run (before the first level, then after each): "
            f"{', '.join(f'{v:.1f}' for v in result.baseline.runs_tokens_per_second)}"
        )
    if result.bound:
        lowest = min(result.levels, key=lambda level: level.concurrency, default=None)
        measured = (
            f"; measured at concurrency {lowest.concurrency}: {1 / lowest.tpot_p50_seconds:,.0f} tok/s"
            if lowest and lowest.tpot_p50_seconds
            else ""
        )
        console.print(
            f"planner decode bound (bandwidth / bytes per step): {result.bound.decode_tokens_per_second:,.0f} "
            f"tok/s per sequence ({result.bound.weight_bytes / 2**20:.1f} MiB weights at "
            f"{result.bound.bandwidth_bytes_per_second / 1e9:.1f} GB/s measured copy bandwidth){measured}"
        )


def _console() -> Console:
    import sys

    from rich.console import Console

    # Piped output (logs, docs) gets room for the whole table instead of rich's 80-column default.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)


def _table(result: ServeBenchResult) -> Table:
    from rich.table import Table

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f}"

    table = Table(
        title=f"lmforge bench serve: {result.model}, {result.max_tokens} output tokens per request "
        "(times in ms; tok/s/seq = 1 / TPOT p50)"
    )
    for column in (
        "conc",
        "reqs",
        "err",
        "tok/s",
        "x base",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "tok/s/seq",
    ):
        table.add_column(column, justify="right")
    for level in result.levels:
        speedup = result.speedup(level.concurrency)
        per_seq = 1 / level.tpot_p50_seconds if level.tpot_p50_seconds else None
        table.add_row(
            str(level.concurrency),
            str(level.requests),
            str(level.errors),
            f"{level.throughput_tokens_per_second:.1f}",
            "-" if speedup is None else f"{speedup:.2f}",
            ms(level.ttft_p50_seconds),
            ms(level.ttft_p99_seconds),
            ms(level.tpot_p50_seconds),
            ms(level.tpot_p99_seconds),
            "-" if per_seq is None else f"{per_seq:.1f}",
        )
    return table


def register(app: typer.Typer) -> None:
    """Adds `lmforge serve` and `lmforge bench serve`."""
    app.command("serve")(serve_command)
    bench = typer.Typer(help="Benchmarks that print figures beside a baseline.", no_args_is_help=True)
    bench.command("serve")(bench_serve_command)
    app.add_typer(bench, name="bench")
