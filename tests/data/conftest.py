"""Helpers for data tests: write small files of every kind in a temporary folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """write_jsonl(records, name="data.jsonl") -> path; a str record is written as a raw line."""

    def write(records: list[Any], name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    return write


def chat(*turns: str) -> dict[str, Any]:
    """chat("user", "hi", "assistant", "hello") -> {"messages": [...]}"""
    return {"messages": [{"role": r, "content": c} for r, c in zip(turns[::2], turns[1::2], strict=True)]}
