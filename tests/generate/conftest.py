"""Fixtures for generate tests: the tiny Llama loaded once, and the folder layouts users bring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def loaded(tiny_llama_dir):
    from lmforge.generate.load import load_model

    return load_model(str(tiny_llama_dir))


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """A LoRA adapter on the tiny Llama with non-zero weights (so it visibly changes the logits)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, config)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    adapter_config = json.loads((path / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_llama_dir)
    return path


@pytest.fixture
def run_dir(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    """A training run folder holding only checkpoints (no final/ yet)."""
    run = tmp_path / "run"
    for step in (2, 10):
        shutil.copytree(tiny_llama_dir, run / "checkpoints" / f"checkpoint-{step}")
    return run
