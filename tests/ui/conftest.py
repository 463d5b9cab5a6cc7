"""Fixtures for the UI tests: a workspace (runs folder + one allowed folder) holding the tiny Llama, a data
file with a broken line, and a safe and an unsafe checkpoint; nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ui_root(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """ROOT/models/tiny (the tiny Llama), ROOT/data/chats.jsonl (line 2 broken), ROOT/files/{weights.bin,evil.pkl}."""
    import torch

    from tests.files.corpus import os_system

    root = tmp_path_factory.mktemp("ui-root")
    shutil.copytree(tiny_llama_dir, root / "models" / "tiny")
    chats = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus 1?"},
                {"role": "assistant", "content": str(i + 1)},
            ]
        }
        for i in range(6)
    ]
    lines = [json.dumps(chat) for chat in chats]
    lines.insert(1, '{"messages": [{"role": "user", "content": "no answer"}')  # line 2: invalid JSON
    (root / "data").mkdir()
    (root / "data" / "chats.jsonl").write_text("\n".join(lines) + "\n")
    (root / "files").mkdir()
    torch.save({"weight": torch.zeros(3, 4), "bias": torch.ones(4)}, root / "files" / "weights.bin")
    (root / "files" / "evil.pkl").write_bytes(os_system(root / "files" / "CANARY", 2))
    return root


@pytest.fixture
def workspace(ui_root: Path, tmp_path: Path):
    """A fresh runs folder per test; the shared root is the one other allowed folder."""
    from lmforge.ui.workspace import Workspace

    return Workspace.create(tmp_path / "runs", [ui_root])


def finished_run(run_dir: Path, losses: list[float], *, stage: str = "sft", eval_losses: list[float] = ()) -> Path:
    """A run folder as `lmforge train` leaves it (config.yaml, metrics.jsonl, result.json), without training."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"stage": stage, "out": str(run_dir), "method": {"name": "lora"}, "train": {"max_steps": len(losses)}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    records = [
        {"step": i + 1, "loss": loss, "tokens_seen": 100 * (i + 1), "time": 1000.0 + i} for i, loss in enumerate(losses)
    ]
    records += [{"step": (i + 1) * 2, "eval_loss": loss} for i, loss in enumerate(eval_losses)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "result.json").write_text(
        json.dumps(
            {
                "stage": stage,
                "method": "lora",
                "steps": len(losses),
                "trainable_params": 10,
                "total_params": 100,
                "final_metrics": {"train_loss": losses[-1]},
                "diagnosis": {"verdict": "good fit", "reason": "fell"},
            }
        )
    )
    return run_dir
