"""Seeded train/validation/test split: grouped so nothing leaks, stratified for classification,
identical on every machine.

Each record belongs to a group: the normalised text of what the model is asked (the prompt of a
chat or preference record, the input of a classifier, the whole text of a document), so two
records asking the same question always land in the same split. Groups are ordered by
sha256(seed, group) and cut at the cumulative ratios within each stratum (the label of the
group's first record), so the result depends only on the data and the seed, never on Python's
hash randomisation, the platform or the order of a dict.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.data.dedup import near_key
from lmforge.data.kinds import Kind
from lmforge.errors import UserInputError
from lmforge.fileio import atomic_directory, atomic_write_json

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset

DEFAULT_RATIOS = (8.0, 1.0, 1.0)
_BATCH_ROWS = 1000


def parse_ratios(spec: str | Sequence[float]) -> tuple[float, ...]:
    """ "8,1,1" -> (8.0, 1.0, 1.0): train/validation/test; two numbers mean train/test."""
    try:
        values = tuple(float(part) for part in (spec.split(",") if isinstance(spec, str) else spec))
    except ValueError as error:
        raise UserInputError(f"--ratios must be numbers such as 8,1,1, not '{spec}'") from error
    if len(values) not in (2, 3) or any(v < 0 for v in values) or not sum(values) > 0 or values[0] <= 0:
        raise UserInputError(f"--ratios needs 2 or 3 non-negative numbers with a positive train share, not '{spec}'")
    return values


def split_names(ratios: Sequence[float]) -> tuple[str, ...]:
    return ("train", "validation", "test") if len(ratios) == 3 else ("train", "test")


@dataclass
class SplitReport:
    seed: int
    ratios: tuple[float, ...]
    counts: dict[str, int]
    groups: int  # distinct prompts/inputs; each lies wholly in one split
    grouped_records: int  # records that share their group with another record
    label_counts: dict[str, dict[str, int]] | None = None  # classification: split -> label name -> records

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SplitResult:
    splits: dict[str, Dataset]
    report: SplitReport
    label_names: list[str] | None = field(default=None)


def _order_hash(seed: int, group: bytes) -> int:
    return int.from_bytes(hashlib.sha256(seed.to_bytes(8, "big", signed=True) + group).digest()[:8], "big")


def assign_splits(group_hashes: np.ndarray, strata: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """Split index (0 = train, ...) per record, from each record's seeded group hash and stratum.

    Within a stratum, groups in hash order are placed by the midpoint of their cumulative record
    count against the cumulative ratios, so proportions hold even when groups have different sizes.
    """
    import numpy as np

    hashes, first, inverse, sizes = np.unique(group_hashes, return_index=True, return_inverse=True, return_counts=True)
    group_split = np.zeros(len(hashes), dtype=np.int64)
    group_stratum = strata[first]
    bounds = np.cumsum(np.asarray(ratios, dtype=np.float64))[:-1] / float(sum(ratios))
    for stratum in np.unique(group_stratum):
        members = np.flatnonzero(group_stratum == stratum)  # already in hash order
        member_sizes = sizes[members]
        cumulative = np.cumsum(member_sizes)
        midpoints = (cumulative - member_sizes / 2.0) / cumulative[-1]
        group_split[members] = np.searchsorted(bounds, midpoints, side="right")
    return group_split[inverse.reshape(-1)]


def split_dataset(
    dataset: Dataset,
    kind: Kind,
    *,
    ratios: str | Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
    label_names: list[str] | None = None,
    stratify: bool | None = None,
) -> SplitResult:
    """Split a canonical dataset; stratified by label for classification unless stratify=False."""
    import numpy as np

    values = parse_ratios(ratios)
    names = split_names(values)
    stratify = kind is Kind.CLASSIFICATION if stratify is None else stratify
    if stratify and kind is not Kind.CLASSIFICATION:
        raise UserInputError("only classification data can be stratified (by its label)")
    if len(dataset) == 0:
        raise UserInputError("cannot split an empty dataset")
    hashes = np.empty(len(dataset), dtype=np.uint64)
    strata = np.zeros(len(dataset), dtype=np.int64)
    row = 0
    for batch in dataset.iter(batch_size=_BATCH_ROWS):
        keys = list(batch)
        for values_of_row in zip(*(batch[k] for k in keys), strict=True):
            record = dict(zip(keys, values_of_row, strict=True))
            hashes[row] = _order_hash(seed, near_key(record, kind, "prompt"))
            if stratify:
                strata[row] = record["label"]
            row += 1
    assignment = assign_splits(hashes, strata, values)
    splits = {name: dataset.select(np.flatnonzero(assignment == i)) for i, name in enumerate(names)}
    unique_groups, group_sizes = np.unique(hashes, return_counts=True)
    label_counts = None
    if kind is Kind.CLASSIFICATION:
        labels = strata if stratify else np.asarray(dataset["label"], dtype=np.int64)
        label_of = label_names or [str(i) for i in range(int(labels.max()) + 1)]
        label_counts = {
            name: {
                label_of[v]: int(c)
                for v, c in zip(*np.unique(labels[assignment == i], return_counts=True), strict=True)
            }
            for i, name in enumerate(names)
        }
    report = SplitReport(
        seed=seed,
        ratios=values,
        counts={name: len(part) for name, part in splits.items()},
        groups=len(unique_groups),
        grouped_records=int(group_sizes[group_sizes > 1].sum()),
        label_counts=label_counts,
    )
    assert sum(report.counts.values()) == len(dataset)
    return SplitResult(splits, report, label_names)


def write_splits(
    result: SplitResult,
    out_dir: str | os.PathLike[str],
    kind: Kind,
    *,
    fmt: str | None = None,
    save_to_disk: bool = False,
) -> list[Path]:
    """Write each split as NAME.jsonl (or one save_to_disk folder) plus split.json, atomically as a folder."""
    from lmforge.data.load import save_jsonl

    written: list[Path] = []
    target = Path(out_dir)
    with atomic_directory(target) as temporary:
        if save_to_disk:
            from datasets import DatasetDict

            DatasetDict(result.splits).save_to_disk(str(temporary))
            written.append(target)
        else:
            for name, part in result.splits.items():
                save_jsonl(part, temporary / f"{name}.jsonl", kind, fmt=fmt, label_names=result.label_names)
                written.append(target / f"{name}.jsonl")
        summary = result.report.to_dict() | {"kind": kind.value, "label_names": result.label_names}
        atomic_write_json(temporary / "split.json", summary)
        written.append(target / "split.json")
    return written
