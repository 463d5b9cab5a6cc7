"""Fixtures for evaluate tests: tiny data files and a tiny reward model, all built locally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    return _write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {"instruction": "What is 12 plus 30?", "output": "42"},
            {"instruction": "Reverse the string abc.", "output": "cba"},
        ],
    )


@pytest.fixture
def sentiment_file(tmp_path: Path) -> Path:
    return _write_jsonl(
        tmp_path / "sentiment.jsonl",
        [
            {"text": "great film, loved it", "label": "positive"},
            {"text": "dull and far too long", "label": "negative"},
            {"text": "a joy from start to end", "label": "positive"},
        ],
    )


@pytest.fixture
def preference_file(tmp_path: Path) -> Path:
    return _write_jsonl(
        tmp_path / "pref.jsonl",
        [
            {"prompt": "What is 2 plus 2?", "chosen": "4", "rejected": "5"},
            {"prompt": "Sort 3 1 2.", "chosen": "1 2 3", "rejected": "3 2 1"},
        ],
    )
