"""Run a GGUF in the real llama.cpp, for parity checks and quality reports.

lmforge writes GGUF in pure Python; the proof that llama.cpp reads it as intended is llama.cpp itself.
The npm package node-llama-cpp ships prebuilt CPU builds of llama.cpp (no compiler needed), so
`make install` puts it in the repository's git-ignored `.node/` (`npm i -E node-llama-cpp@3.21.1`);
LMFORGE_NODE_LLAMA_CPP names another folder holding its node_modules. A small Node script
(llama_cpp_runner.mjs) loads the model, tokenizes prompts with llama.cpp's own tokenizer, decodes
greedily and reports the greedy next token after every prefix of given token sequences.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import DependencyError, FormatError

NODE_LLAMA_CPP_VERSION = "3.21.1"
_RUNNER = Path(__file__).with_name("llama_cpp_runner.mjs")
_TIMEOUT_SECONDS = 600


@dataclass
class LlamaCppPrompt:
    """One prompt as llama.cpp saw and answered it."""

    tokens: list[int]  # llama.cpp's tokenization of the prompt text
    generated: list[int]  # greedy continuation, stop token excluded
    text: str
    decode_seconds: float  # first to last generated token
    decode_tokens: int


def node_llama_cpp_dir() -> Path | None:
    """The folder whose node_modules holds node-llama-cpp: $LMFORGE_NODE_LLAMA_CPP, else the checkout's .node/."""
    candidates = [Path(os.environ["LMFORGE_NODE_LLAMA_CPP"])] if os.environ.get("LMFORGE_NODE_LLAMA_CPP") else []
    candidates.append(Path(__file__).resolve().parents[3] / ".node")
    for folder in candidates:
        if (folder / "node_modules" / "node-llama-cpp" / "dist" / "index.js").is_file():
            return folder
    return None


def llama_cpp_available() -> bool:
    return shutil.which("node") is not None and node_llama_cpp_dir() is not None


def run_llama_cpp(
    model: str | os.PathLike[str],
    *,
    prompts: Sequence[str] = (),
    max_tokens: int = 16,
    stop: Sequence[int] = (),
    sequences: Sequence[Sequence[int]] = (),
    threads: int = 2,
    context_tokens: int = 512,
) -> tuple[list[LlamaCppPrompt], list[list[int | None]]]:
    """Greedy answers to `prompts` and the greedy next token after each prefix of `sequences`, from llama.cpp."""
    folder = node_llama_cpp_dir()
    node = shutil.which("node")
    if folder is None or node is None:
        raise DependencyError(
            f"llama.cpp is not installed: needs node and `npm i -E --prefix .node "
            f"node-llama-cpp@{NODE_LLAMA_CPP_VERSION}` (make install does it)"
        )
    entry = (folder / "node_modules" / "node-llama-cpp" / "dist" / "index.js").as_uri()
    request = {
        "model": str(Path(model).resolve()),
        "prompts": list(prompts),
        "max_tokens": max_tokens,
        "stop": list(stop),
        "sequences": [list(map(int, s)) for s in sequences],
        "threads": threads,
        "context": context_tokens,
    }
    result = subprocess.run(
        [node, str(_RUNNER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        env={**os.environ, "LMFORGE_NODE_LLAMA_CPP_ENTRY": entry},
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise FormatError(f"llama.cpp could not run {Path(model).name}: {last}")
    answer: dict[str, Any] = json.loads(result.stdout)
    return ([LlamaCppPrompt(**entry) for entry in answer["prompts"]], [entry["top1"] for entry in answer["sequences"]])
