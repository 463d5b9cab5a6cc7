"""Train fixtures: tiny configs around the shared tiny models; every run goes to tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DATA = {
    "pretrain": "builtin:corpus",
    "sft": "builtin:arith-sft",
    "rm": "builtin:arith-pref",
    "dpo": "builtin:arith-pref",
    "kto": "builtin:arith-kto",
    "orpo": "builtin:arith-pref",
    "rlhf": "builtin:arith-pref",
    "distill": "builtin:arith-sft",
    "classify": "builtin:sentiment",
    "mlm": "builtin:corpus",
}


def deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture
def make_config(tmp_path: Path, tiny_llama_dir: Path):
    """A validated TrainConfig for `stage` on the tiny Llama: 2 steps, 16 examples, 48 tokens."""
    from lmforge.train.config import validate_config

    def make(stage: str, method_name: str = "full", **extra: Any):
        raw: dict[str, Any] = {
            "stage": stage,
            "out": str(tmp_path / f"{stage}-{method_name}"),
            "model": {"path": str(tiny_llama_dir)},
            "data": {"train": DATA[stage], "max_examples": 16, "max_len": 48, "eval_fraction": 0.0},
            "method": {"name": method_name, "lora_r": 4, "num_virtual_tokens": 4},
            "train": {"max_steps": 2, "micro_batch_size": 4, "learning_rate": 1e-3, "seed": 0},
        }
        return validate_config(deep_update(raw, extra))

    return make


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's real WordPiece tokenizer (has [MASK]) for the mlm stage."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    torch.manual_seed(2)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
    )
    path = tmp_path_factory.mktemp("tiny-bert")
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny matmuls on a shared 2-core machine are fastest (and steadiest) on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
