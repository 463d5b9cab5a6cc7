"""`--engine vllm`: hand the same flags to vLLM's own OpenAI-compatible server (seed 004 ends with it on port 8000).

vLLM needs a CUDA GPU and the vllm package; without either this says so in one line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence

from lmforge.errors import DependencyError


def vllm_command(model: str, *, adapters: Sequence[tuple[str, str]] = (), host: str = "127.0.0.1", port: int = 8000,
                 api_keys: Sequence[str] = (), cors_origins: Sequence[str] = (), served_model_name: str | None = None,
                 max_batch_size: int | None = None) -> list[str]:
    """The `python -m vllm.entrypoints.openai.api_server` command line equivalent to lmforge serve's flags."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--host", host, "--port", str(port)]
    if served_model_name:
        command += ["--served-model-name", served_model_name]
    if api_keys:  # vLLM takes one key; it also reads VLLM_API_KEY
        if len(api_keys) > 1:
            raise DependencyError("vLLM's server accepts one --api-key; pass one, or use --engine transformers")
        command += ["--api-key", api_keys[0]]
    if cors_origins:
        command += ["--allowed-origins", json.dumps(list(cors_origins))]  # vLLM parses a JSON list
    if max_batch_size:
        command += ["--max-num-seqs", str(max_batch_size)]
    if adapters:
        command += ["--enable-lora", "--lora-modules", *[f"{name}={path}" for name, path in adapters]]
    return command


def check_vllm() -> None:
    """Raise DependencyError unless vllm is importable and a CUDA GPU is visible."""
    if importlib.util.find_spec("vllm") is None:
        raise DependencyError("--engine vllm needs vLLM: pip install vllm (Linux with a CUDA GPU); "
                              "or use --engine transformers")
    import torch

    if not torch.cuda.is_available():
        raise DependencyError("--engine vllm needs a CUDA GPU and none is visible; use --engine transformers")


def serve_with_vllm(model: str, **flags: object) -> int:
    """Run vLLM's server in the foreground until it exits; returns its exit code."""
    check_vllm()
    return subprocess.call(vllm_command(model, **flags))  # type: ignore[arg-type]
