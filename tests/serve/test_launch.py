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
