"""Process launch (lmforge.serve.launch): uvicorn run until a signal, or until the engine thread dies. Loading
the engine is tested in test_adapters.py, the command in tests/cli/test_serve_cli.py."""

from __future__ import annotations

import threading
import time

import httpx


def test_serving_exits_with_an_error_when_the_engine_dies(tiny_loaded, monkeypatch):
    """So a supervisor (systemd, Kubernetes) restarts the process instead of keeping a server that answers nothing."""
    from lmforge.errors import LmforgeError
    from lmforge.serve.app import create_app
    from lmforge.serve.bench import free_port
    from lmforge.serve.engine import Engine
    from lmforge.serve.launch import run_uvicorn

    engine = Engine({"tiny": tiny_loaded})
    port = free_port()
    outcome = {}

    def run() -> None:
        try:
            run_uvicorn(create_app(engine), host="127.0.0.1", port=port, graceful_timeout_s=5, engine=engine)
            outcome["returned"] = True
        except LmforgeError as error:
            outcome["error"] = str(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    monkeypatch.setattr(engine, "_take_waiting", lambda *_: (_ for _ in ()).throw(RuntimeError("scheduler bug")))
    httpx.post(
        f"http://127.0.0.1:{port}/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2}, timeout=10
    )
    thread.join(30)
    assert not thread.is_alive() and "scheduler bug" in outcome.get("error", "")


def test_quant_serves_the_model_quantized_while_loading_and_refuses_what_it_would_lose(tiny_llama_dir, tmp_path):
    """`lmforge serve MODEL --quant nf4`: the engine's model holds bitsandbytes layers and answers requests; with
    adapters the update would be merged into quantized weights, so that is refused (as generate refuses it)."""
    import pytest
    from fastapi.testclient import TestClient

    from lmforge.errors import UserInputError
    from lmforge.serve.app import create_app
    from lmforge.serve.launch import load_engine

    engine = load_engine(str(tiny_llama_dir), served_model_name="tiny", quant="nf4")
    assert type(engine.models["tiny"].model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    with TestClient(create_app(engine)) as client:
        reply = client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 3})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
    with pytest.raises(UserInputError, match="--quant with --adapter"):
        load_engine(str(tiny_llama_dir), adapters=[("a", str(tmp_path))], quant="nf4")  # refused before loading
