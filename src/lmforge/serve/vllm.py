"""`--engine vllm`: hand the same flags to vLLM's own OpenAI-compatible server (`vllm serve`, port 8000 by default:
https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html).

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


def serve_with_vllm(model: str, *, adapters: Sequence[tuple[str, str]] = (), served_model_name: str | None = None,
                    trust_pickle: bool = False, trust_remote_code: bool = False, **flags: object) -> int:
    """Run vLLM's server in the foreground until it exits; returns its exit code.

    MODEL and the adapters are resolved by lmforge first (lmforge.hub.locate_model: downloaded, pickles
    scanned), so vLLM reads only local files lmforge has checked, under the name lmforge would serve."""
    check_vllm()
    from lmforge.hub.reference import locate_model

    ref = locate_model(model, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    local_adapters = [(name, str(locate_model(path, trust_pickle=trust_pickle).path)) for name, path in adapters]
    command = vllm_command(str(ref.path), adapters=local_adapters, served_model_name=served_model_name or ref.name,
                           **flags)  # type: ignore[arg-type]
    return subprocess.call(command + (["--trust-remote-code"] if trust_remote_code else []))
