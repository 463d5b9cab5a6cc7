"""A real uvicorn server on 127.0.0.1 (a free port, in a thread) serving the tiny Llama; shut down after."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

API_KEY = "sk-test"


@dataclass
class Server:
    url: str
    app: Any
    engine: Any
    server: Any


@contextmanager
def run_server(app: Any) -> Iterator[tuple[str, Any]]:
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=10)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """On a shared 2-core machine OpenMP's spinning threads make tiny matmuls 10-20x slower; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_llama_dir):
    from lmforge.generate.load import load_model

    return load_model(str(tiny_llama_dir))


@pytest.fixture(scope="module")
def served(tiny_loaded) -> Iterator[Server]:
    """The tiny Llama under the names `tiny` and `tiny-lora` (a second model entry), API key `sk-test`."""
    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine

    engine = Engine({"tiny": tiny_loaded, "tiny-lora": tiny_loaded}, max_batch_size=8, max_queue=64)
    app = create_app(engine, api_keys=[API_KEY, "sk-second"], cors_origins=["http://example.com"])
    with run_server(app) as (url, server):
        yield Server(url, app, engine, server)
