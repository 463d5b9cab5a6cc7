"""`--engine vllm`: the same model and flags handed to vLLM's own OpenAI-compatible server (`vllm serve`:
https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html), the engine users scale to (tensor
parallelism over several GPUs, paged attention).

MODEL is resolved as the transformers engine resolves it (lmforge.hub.locate_model): a hub id is downloaded into
the Hugging Face cache and its pickles scanned, so vLLM reads only local files lmforge has checked; a run folder
becomes its final/ or newest checkpoint; an adapter folder (or a run holding one) is served as its base with the
adapter as a vLLM LoRA module under the served name (`--enable-lora --lora-modules`), as is every `--adapter`, with
`--max-lora-rank` the smallest rank vLLM accepts that holds the largest adapter and `--max-loras` their count, so
they share batches. What vLLM understands is forwarded (`--tp` as `--tensor-parallel-size`, `--max-model-len`,
`--dtype`, `--api-key`, `--served-model-name`, `--max-batch-size` as `--max-num-seqs`, `--cors-origin` as
`--allowed-origins`, `--trust-remote-code`); what it cannot take is refused with one line each, never dropped.

vLLM needs a CUDA GPU and the vllm package; without either this says so in one line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.errors import DependencyError, UserInputError, join_problems

# vllm/config/lora.py MaxLoRARanks: the ranks vLLM's LoRA kernels are built for.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Options of `lmforge serve` vLLM's server has no equivalent for, with what to do instead.
_NOT_FORWARDED = {
    "max_queue": "--max-queue: vLLM's server has no queue limit (it queues every request)",
    "request_timeout_s": "--timeout: vLLM's server has no per-request time limit",
    "device": "--device: vLLM picks its GPUs itself; choose them with CUDA_VISIBLE_DEVICES",
    "threads": "--threads sets torch's CPU threads for the transformers engine; vLLM runs on GPUs",
    "device_map": "--device-map: vLLM spreads a model over GPUs by tensor parallelism; use --tp",
    "merge_adapters": "--merge-adapters: vLLM serves one set of weights with adapters unmerged (--enable-lora); to "
    "serve merged weights, run `lmforge convert ADAPTER DIR --to merged` and serve DIR",
    "max_body_bytes": "--max-body-bytes: vLLM's server has no body-size limit option",
    "max_prompt_chars": "--max-prompt-chars: vLLM's server has no prompt-character limit option",
    "quant": "--quant quantizes with bitsandbytes while the transformers engine loads; for vLLM, serve a model "
    "quantized beforehand (its config names the method)",
}


def check_options(
    *,
    tp: int | None = None,
    max_model_len: int | None = None,
    dtype: str | None = None,
    api_keys: Sequence[str] = (),
    **options: Any,
) -> None:
    """Raise one UserInputError naming every option vLLM cannot take or that is out of range (`options` may hold
    every keyword vllm_command takes; those it forwards pass)."""
    from lmforge.generate.load import DTYPES

    forwarded = {
        "adapters",
        "host",
        "port",
        "cors_origins",
        "served_model_name",
        "max_batch_size",
        "trust_pickle",
        "trust_remote_code",
    }
    not_forwarded = {name: value for name, value in options.items() if name not in forwarded}
    problems = [
        _NOT_FORWARDED[name]
        for name, value in not_forwarded.items()
        if name in _NOT_FORWARDED and value not in (None, False)
    ]
    problems += [f"{name}: not an option of lmforge serve" for name in not_forwarded if name not in _NOT_FORWARDED]
    if tp is not None and tp < 1:
        problems.append(f"--tp must be >= 1 (got {tp})")
    if max_model_len is not None and max_model_len < 1:
        problems.append(f"--max-model-len must be >= 1 (got {max_model_len})")
    if dtype is not None and dtype not in DTYPES:
        problems.append(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if any(not key.strip() for key in api_keys):
        problems.append("an API key is empty (--api-key '' or an empty LMFORGE_API_KEY)")
    if problems:
        raise UserInputError(f"--engine vllm: {join_problems(problems)}")


def vllm_command(
    model: str,
    *,
    adapters: Sequence[tuple[str, str]] = (),
    host: str = "127.0.0.1",
    port: int = 8000,
    api_keys: Sequence[str] = (),
    cors_origins: Sequence[str] = (),
    served_model_name: str | None = None,
    max_batch_size: int | None = None,
    tp: int | None = None,
    max_model_len: int | None = None,
    dtype: str | None = None,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
    **not_forwarded: Any,
) -> list[str]:
    """The `python -m vllm.entrypoints.openai.api_server` command line equivalent to lmforge serve's options.

    `not_forwarded` takes the options vLLM has no equivalent for (max_queue, request_timeout_s, device, threads,
    device_map, merge_adapters, max_body_bytes, max_prompt_chars): any given (not None, not False) is an error,
    all of them reported together (check_options). MODEL and the adapters are resolved by lmforge
    (lmforge.hub.locate_model: hub ids downloaded, pickles scanned), so vLLM reads only local files lmforge has
    checked; `trust_remote_code` is forwarded."""
    check_options(tp=tp, max_model_len=max_model_len, dtype=dtype, api_keys=api_keys, **not_forwarded)

    base, modules = resolve_for_vllm(
        model, adapters, served_model_name, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code
    )
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        base.path,
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        base.name,
    ]
    if tp is not None:
        command += ["--tensor-parallel-size", str(tp)]
    if max_model_len is not None:
        command += ["--max-model-len", str(max_model_len)]
    if dtype is not None:
        command += ["--dtype", dtype]
    if max_batch_size is not None:
        command += ["--max-num-seqs", str(max_batch_size)]
    if api_keys:
        command += ["--api-key", *api_keys]  # vLLM takes several (any one authenticates)
    # vLLM allows every origin by default; lmforge allows none unless asked (its JSON-list form).
    command += ["--allowed-origins", json.dumps(list(cors_origins))]
    if modules:
        rank = max(module.rank for module in modules)
        fitting = [allowed for allowed in VLLM_LORA_RANKS if allowed >= rank]
        if not fitting:
            raise UserInputError(
                f"--engine vllm: an adapter has LoRA rank {rank}; vLLM serves ranks up to "
                f"{VLLM_LORA_RANKS[-1]}: merge it (lmforge convert ADAPTER DIR --to merged)"
            )
        command += [
            "--enable-lora",
            "--max-lora-rank",
            str(fitting[0]),
            "--max-loras",
            str(len(modules)),
            "--lora-modules",
            *[json.dumps({"name": m.name, "path": m.path}) for m in modules],
        ]
    if trust_remote_code:
        command.append("--trust-remote-code")
    return command


class _Served:
    """One name vLLM serves: the base model or a LoRA module."""

    def __init__(self, path: str, name: str, rank: int = 0):
        self.path, self.name, self.rank = path, name, rank


def resolve_for_vllm(
    model: str,
    adapters: Sequence[tuple[str, str]],
    served_model_name: str | None,
    *,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
) -> tuple[_Served, list[_Served]]:
    """(the base vLLM loads, the LoRA modules beside it), resolved as lmforge.generate.load resolves models (the
    hub resolver): an adapter given as MODEL is served under `served_model_name` (or the transformers engine's
    name for it, base+adapter), its base under the base's own name."""
    from lmforge.generate.load import locate_adapter
    from lmforge.hub.reference import locate_base, locate_model

    ref = locate_model(model, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    modules = []
    if ref.is_adapter:
        base_ref = locate_base(ref, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
        base = _Served(str(base_ref.path), base_ref.name)
        modules.append(_lora(served_model_name or f"{base_ref.name}+{ref.name}", ref.path, base_ref.path))
    else:
        base = _Served(str(ref.path), served_model_name or ref.name)
    modules += [_lora(name, locate_adapter(adapter, trust_pickle).path, base.path) for name, adapter in adapters]
    names = [m.name for m in modules] + [base.name]
    if len(set(names)) != len(names):
        raise UserInputError(f"--engine vllm: served names must differ (got {', '.join(str(n) for n in names)})")
    return base, modules


def _lora(name: str, folder: Path, base: str | Path) -> _Served:
    """A LoRA module, refused when vLLM could not serve it: an adapter that adds tokens needs a resized embedding,
    which vLLM's LoRA does not take (the transformers engine gives such an adapter its own merged copy)."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserInputError(f"{folder}/adapter_config.json is unreadable: {error}") from None
    ranks = [config.get("r") or 0, *(config.get("rank_pattern") or {}).values()]
    if (folder / "tokenizer_config.json").is_file() and Path(base, "config.json").is_file():
        from transformers import AutoTokenizer

        vocabulary = json.loads(Path(base, "config.json").read_text()).get("vocab_size") or 0
        if len(AutoTokenizer.from_pretrained(folder)) > vocabulary:
            raise UserInputError(
                f"--engine vllm: adapter {name} ({folder}) adds tokens to the vocabulary, which "
                "vLLM's LoRA cannot serve; merge it (lmforge convert ADAPTER DIR --to merged) and "
                "serve DIR"
            )
    return _Served(str(folder), name, int(max(ranks)))


def check_vllm() -> None:
    """Raise DependencyError unless vllm is importable and a CUDA GPU is visible."""
    if importlib.util.find_spec("vllm") is None:
        raise DependencyError(
            "--engine vllm needs vLLM: pip install vllm (Linux with a CUDA GPU); or use --engine transformers"
        )
    import torch

    if not torch.cuda.is_available():
        raise DependencyError("--engine vllm needs a CUDA GPU and none is visible; use --engine transformers")


def serve_with_vllm(model: str, **options: Any) -> int:
    """Run vLLM's server in the foreground until it exits; returns its exit code. Every option vLLM cannot take is
    refused, then vLLM is looked for, and only then is MODEL resolved (a hub id downloaded)."""
    check_options(**options)
    check_vllm()
    return subprocess.call(vllm_command(model, **options))
