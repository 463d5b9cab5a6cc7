"""Serving: the OpenAI-compatible HTTP app, the continuous-batching engine, embeddings, the vLLM bridge and the
load benchmark (docs/serve.md).

    from lmforge.serve import serve, load_engine, create_app
    serve("runs/sft-tiny", adapters=[("sql", "runs/lora-sql")], port=8000)   # `lmforge serve`, until Ctrl-C
    app = create_app(load_engine("runs/sft-tiny"), api_keys=["sk-local"])   # or the FastAPI app, to mount yourself
    bench_serve("runs/sft-tiny", concurrency=[1, 4]).levels                  # `lmforge bench serve`

Names load on first use (lmforge.lazy), so `import lmforge.serve` imports neither FastAPI nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

if TYPE_CHECKING:
    from lmforge.serve.app import create_app
    from lmforge.serve.bench import ServeBenchResult, bench_serve
    from lmforge.serve.embed import Embedder, is_embedding_model
    from lmforge.serve.engine import Engine, EngineDeadError, EngineStats, Event, QueueFullError, Request
    from lmforge.serve.launch import load_engine, parse_adapters, serve
    from lmforge.serve.vllm import serve_with_vllm

__all__ = [
    "Embedder",
    "Engine",
    "EngineDeadError",
    "EngineStats",
    "Event",
    "QueueFullError",
    "Request",
    "ServeBenchResult",
    "bench_serve",
    "create_app",
    "is_embedding_model",
    "load_engine",
    "parse_adapters",
    "serve",
    "serve_with_vllm",
]
__getattr__, __dir__ = lazy_exports(__name__)
