"""`lmforge serve`'s process: parse --adapter, load the model(s) into an engine (or an encoder for
/v1/embeddings), build the HTTP app (lmforge.serve.app) and run it under uvicorn until a signal, or until the
engine thread dies (then a non-zero exit, so a supervisor restarts the server)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from collections.abc import Sequence
from typing import Any

from lmforge.errors import UserInputError
from lmforge.generate.load import check_device_map
from lmforge.hub.reference import locate_model
from lmforge.serve.app import DEFAULT_MAX_BODY_BYTES, check_api_keys, create_app
from lmforge.serve.embed import Embedder, is_embedding_model
from lmforge.serve.engine import Engine, EngineDeadError


def parse_adapters(specs: Sequence[str]) -> list[tuple[str, str]]:
    """`NAME=DIR` pairs from --adapter options (the name is the model name clients ask for)."""
    pairs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserInputError(f"--adapter {spec!r}: write NAME=DIR (clients select it with model=NAME)")
        pairs.append((name, path))
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise UserInputError(f"--adapter names must differ (got {', '.join(names)})")
    return pairs


def load_engine(
    model: str,
    *,
    adapters: Sequence[tuple[str, str]] = (),
    served_model_name: str | None = None,
    max_batch_size: int = 16,
    max_queue: int = 256,
    device: str | None = None,
    dtype: str | None = None,
    merge_adapters: bool = False,
    device_map: str | None = None,
    max_model_len: int | None = None,
    quant: str | None = None,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Engine:
    """An engine holding MODEL (under its served name) and each LoRA adapter beside it on the same weights
    (lmforge.generate.load.attach_adapter); an adapter that adds tokens gets its own merged copy.

    `merge_adapters` gives every adapter its own merged copy instead: a model's memory per adapter, bought
    for speed (benchmarks/serve_adapters.py: an unmerged adapter decoded at 0.61x a merged copy on a CPU).
    `quant` (int8, nf4, int4) quantizes MODEL while it loads, as generate, chat and eval do."""
    from lmforge.generate.load import attach_adapter, load_model

    if quant is not None and adapters:
        raise UserInputError(
            "--quant with --adapter: serve a merged model quantized (lmforge convert BASE OUT --adapter DIR, "
            "then lmforge serve OUT --quant ...), or the adapters unquantized"
        )
    load = functools.partial(
        load_model,
        device=device,
        dtype=dtype,
        device_map=device_map,
        trust_pickle=trust_pickle,
        trust_remote_code=trust_remote_code,
    )
    base = load(model, quant=quant)
    models = {served_model_name or base.name: base}
    for name, path in adapters:
        if name in models:
            raise UserInputError(f"--adapter name {name!r} is already the base model's name; choose another")
        shared = None if merge_adapters else attach_adapter(base, name, path, trust_pickle=trust_pickle)
        models[name] = shared or load(model, adapter=path)
    if max_model_len is not None:  # a shorter context than the model's (as vLLM's --max-model-len), never a longer one
        for name, loaded in models.items():
            if max_model_len > loaded.context_length:
                raise UserInputError(
                    f"--max-model-len {max_model_len} exceeds {name}'s context length of {loaded.context_length} tokens"
                )
            models[name] = dataclasses.replace(loaded, context_length=max_model_len)
    return Engine(models, max_batch_size=max_batch_size, max_queue=max_queue)


def serve(
    model: str,
    *,
    adapters: Sequence[tuple[str, str]] = (),
    host: str = "127.0.0.1",
    port: int = 8000,
    api_keys: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    served_model_name: str | None = None,
    max_batch_size: int = 16,
    max_queue: int = 256,
    request_timeout_s: float | None = 600.0,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    merge_adapters: bool = False,
    max_body_bytes: int | None = None,
    max_prompt_chars: int | None = None,
    device_map: str | None = None,
    tp: int | None = None,
    max_model_len: int | None = None,
    quant: str | None = None,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
    on_ready: Any = None,
) -> None:
    """Load the model(s) and serve them with uvicorn until interrupted (Ctrl-C / SIGTERM finish in-flight requests).

    `threads` sets torch's CPU threads: on a machine shared with other work, fewer threads than cores avoids
    OpenMP threads spinning against each other (measured 10-20x slower tiny matmuls on a loaded 2-core host).
    `device_map` ("auto") spreads a model larger than one GPU over the GPUs (accelerate). An encoder MODEL
    (a sentence-transformers folder) is served on /v1/embeddings instead of the generation routes.
    Raises EngineDeadError (a non-zero exit) if the engine thread dies, so a supervisor restarts the server.
    """
    if max_batch_size < 1 or max_queue < 1:
        raise UserInputError("--max-batch-size and --max-queue must be >= 1")
    if request_timeout_s is not None and not (math.isfinite(request_timeout_s) and request_timeout_s > 0):
        raise UserInputError(f"--timeout must be > 0 seconds and finite (got {request_timeout_s})")
    check_api_keys(api_keys)
    if tp is not None and tp != 1:
        raise UserInputError(
            "--tp (tensor parallelism) needs --engine vllm; the transformers engine spreads a model "
            "over GPUs with --device-map auto"
        )
    if max_model_len is not None and max_model_len < 1:
        raise UserInputError(f"--max-model-len must be >= 1 (got {max_model_len})")
    body_limit = DEFAULT_MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes
    if body_limit < 1 or (max_prompt_chars is not None and max_prompt_chars < 1):
        raise UserInputError("--max-body-bytes and --max-prompt-chars must be >= 1")
    check_port(host, port)  # before the slow model load, not after it
    if threads is not None:
        import torch

        if threads < 1:
            raise UserInputError("--threads must be >= 1")
        torch.set_num_threads(threads)
    embedders: dict[str, Embedder] = {}
    # A hub id is downloaded (and scanned) here once; the loaders below find it in the cache.
    if is_embedding_model(locate_model(model, need="any", trust_remote_code=trust_remote_code).path):
        if adapters:
            raise UserInputError(f"{model} is an embedding model (an encoder); --adapter needs a causal LM")
        if quant is not None:
            raise UserInputError(f"{model} is an embedding model (an encoder); --quant serves causal LMs only")
        check_device_map(device_map, device)
        encoder = Embedder(
            model,
            name=served_model_name,
            device=device,
            dtype=dtype,
            device_map=device_map,
            trust_pickle=trust_pickle,
            trust_remote_code=trust_remote_code,
        )
        embedders[encoder.name] = encoder
        engine = Engine({}, max_batch_size=max_batch_size, max_queue=max_queue)
    else:
        engine = load_engine(
            model,
            adapters=adapters,
            served_model_name=served_model_name,
            max_batch_size=max_batch_size,
            max_queue=max_queue,
            device=device,
            dtype=dtype,
            merge_adapters=merge_adapters,
            device_map=device_map,
            max_model_len=max_model_len,
            quant=quant,
            trust_pickle=trust_pickle,
            trust_remote_code=trust_remote_code,
        )
    app = create_app(
        engine,
        api_keys=api_keys,
        cors_origins=cors_origins,
        request_timeout_s=request_timeout_s,
        max_body_bytes=body_limit,
        max_prompt_chars=max_prompt_chars,
        embedders=embedders,
    )
    if on_ready is not None:
        on_ready([*engine.models, *embedders])
    run_uvicorn(app, host=host, port=port, graceful_timeout_s=request_timeout_s, engine=engine)


def run_uvicorn(
    app: Any, *, host: str, port: int, graceful_timeout_s: float | None, engine: Engine | None = None
) -> None:
    """uvicorn until SIGINT/SIGTERM, which stop new connections and let in-flight requests finish (a second
    Ctrl-C forces the exit). Unlike `uvicorn.run`, the signal is not re-raised afterwards, so a graceful stop ends
    with exit code 0 instead of a KeyboardInterrupt traceback.

    If `engine`'s thread dies, the server stops too and this raises EngineDeadError: a server that can no longer
    generate must not keep answering health checks; its supervisor (systemd, Kubernetes) restarts it."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=int(graceful_timeout_s) if graceful_timeout_s else None,
    )
    server = Server(config)
    if engine is not None:

        def stop_serving(_: BaseException) -> None:  # engine thread; uvicorn polls the flag
            server.should_exit = True

        engine.on_death = stop_serving
    server.run()
    if engine is not None and engine.failure is not None:
        raise EngineDeadError(
            f"the engine stopped after an internal error ({engine.failure}); the server exited so "
            "that its supervisor can restart it"
        )


def check_port(host: str, port: int) -> None:
    """Fail fast with one line when the address is taken or cannot be bound."""
    import socket

    if not 0 <= port <= 65535:
        raise UserInputError(f"--port must be 0-65535 (got {port})")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserInputError(
                f"cannot listen on {host}:{port} ({error.strerror}); pass another --port or stop the server using it"
            ) from None
