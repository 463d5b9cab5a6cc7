"""Exact and near-exact duplicates: counted always, removed on request.

Exact = the same canonical record. Near-exact = the same text once case, whitespace and
punctuation are normalised ("Hello,  World!" == "hello world"). Punctuation becomes a space
rather than vanishing, so "12+3" and "1+23" stay different problems. Keys are 16-byte digests,
so a million records cost a few tens of MB, never the records themselves.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from lmforge.data.kinds import Kind

if TYPE_CHECKING:
    from datasets import Dataset

_PUNCTUATION = re.compile(r"[^\w\s]|_")
_BATCH_ROWS = 1000
Part = Literal["example", "prompt"]


def normalise_text(text: str) -> str:
    """Case-folded, punctuation as spaces, whitespace collapsed: the near-exact comparison form."""
    return " ".join(_PUNCTUATION.sub(" ", text.casefold()).split())


def _turns_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def record_text(record: dict[str, Any], kind: Kind, part: Part = "example") -> str:
    """The text that makes a record what it is; part="prompt" keeps only what the model is asked
    (the split groups by it, so one question never lands in both train and test)."""
    if kind is Kind.TEXT:
        return record["text"]
    if kind is Kind.CLASSIFICATION:
        return record["text"] + "\n" + (record.get("text_pair") or "")
    if kind is Kind.CHAT:
        messages = record["messages"]
        if part == "prompt":
            last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
            messages = messages[: last_user + 1]
        return _turns_text(messages)
    prompt = _turns_text(record["prompt"])
    if part == "prompt":
        return prompt
    if kind is Kind.PREFERENCE:
        return prompt + "\n" + _turns_text(record["chosen"]) + "\n" + _turns_text(record["rejected"])
    return prompt + "\n" + _turns_text(record["completion"]) + f"\n{record['label']}"


def exact_key(record: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False).encode()).digest()[:16]


def near_key(record: dict[str, Any], kind: Kind, part: Part = "example") -> bytes:
    return hashlib.sha256(normalise_text(record_text(record, kind, part)).encode()).digest()[:16]


@dataclass
class DuplicateReport:
    records: int = 0
    exact_duplicates: int = 0  # records identical to an earlier one
    near_duplicates: int = 0  # records equal to an earlier one only after normalisation
    removed: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _rows(batch: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(batch)
    return [dict(zip(keys, values, strict=True)) for values in zip(*(batch[k] for k in keys), strict=True)]


def find_duplicates(dataset: Dataset, kind: Kind) -> DuplicateReport:
    """Count duplicates without changing the dataset."""
    report = DuplicateReport()
    exact_seen: set[bytes] = set()
    near_seen: set[bytes] = set()
    for batch in dataset.iter(batch_size=_BATCH_ROWS):
        for record in _rows(batch):
            report.records += 1
            exact, near = exact_key(record), near_key(record, kind)
            if exact in exact_seen:
                report.exact_duplicates += 1
            elif near in near_seen:
                report.near_duplicates += 1
            exact_seen.add(exact)
            near_seen.add(near)
    return report


def drop_duplicates(dataset: Dataset, kind: Kind) -> tuple[Dataset, DuplicateReport]:
    """Keep the first of every group of exact or near-exact duplicates."""
    report = find_duplicates(dataset, kind)
    if not report.exact_duplicates and not report.near_duplicates:
        return dataset, report
    import numpy as np

    near_seen: set[bytes] = set()
    keep = np.zeros(len(dataset), dtype=bool)
    row = 0
    for batch in dataset.iter(batch_size=_BATCH_ROWS):
        for record in _rows(batch):
            key = near_key(record, kind)
            keep[row] = key not in near_seen
            near_seen.add(key)
            row += 1
    kept = dataset.select(np.flatnonzero(keep))
    report.removed = len(dataset) - len(kept)
    assert report.removed == report.exact_duplicates + report.near_duplicates
    return kept, report
