"""Packing, length-grouped batching and collators: spend compute on tokens, not on padding.

Packing puts many short examples into one row of at most `block_size` tokens. Attention stays inside
each example because `position_ids` restart at 0 at every example boundary and no 2-D attention mask
is passed: transformers (masking_utils.find_packed_sequence_indices) then builds a block-diagonal
causal mask for sdpa/eager attention, and flash-attention uses the same position_ids as varlen
boundaries. That detection only runs without a KV cache, so packed batches carry `use_cache=False`.
The label of each example's first token is -100: in a packed row it would otherwise be "predicted"
from the previous example's last token, a target that does not exist when examples stand alone.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmforge.data.tokenize import IGNORE_INDEX
from lmforge.errors import UserInputError

if TYPE_CHECKING:
    import datasets
    import torch


def plan_bins(lengths: Sequence[int], block_size: int) -> list[list[int]]:
    """Group example indices into bins of total length <= block_size (best-fit decreasing).

    Best-fit decreasing fills bins to within a few percent of optimal for long-tailed lengths
    (Johnson 1973 bound: at most 11/9 OPT + 1 bins); bins keep ascending index order inside.
    """
    too_long = [i for i, n in enumerate(lengths) if n > block_size]
    if too_long:
        raise UserInputError(
            f"{len(too_long)} examples are longer than block_size {block_size} (first: #{too_long[0]}, "
            f"{lengths[too_long[0]]} tokens); tokenize with max_len <= block_size"
        )
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, bin index), sorted: bisect finds the tightest fit
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        need = lengths[index]
        slot = bisect.bisect_left(free, (need, -1))
        if slot == len(free):
            bins.append([index])
            bisect.insort(free, (block_size - need, len(bins) - 1))
        else:
            room, bin_index = free.pop(slot)
            bins[bin_index].append(index)
            bisect.insort(free, (room - need, bin_index))
    return [sorted(b) for b in bins]


def pack_examples(dataset: datasets.Dataset, *, block_size: int, seed: int = 0) -> datasets.Dataset:
    """Pack tokenized examples (input_ids, optional labels) into rows of at most `block_size` tokens.

    Each row has input_ids, labels and position_ids (restarting at 0 per example); no attention_mask,
    so the model sees the boundaries. Rows are shuffled with `seed` so a batch does not hold only the
    long examples that best-fit placed first.
    """
    from datasets import Dataset

    if block_size < 2:
        raise UserInputError(f"block_size must be at least 2 tokens, got {block_size}")
    if "input_ids" not in dataset.column_names:
        raise UserInputError(f"pack_examples needs tokenized data (input_ids); got columns {dataset.column_names}")
    input_ids = dataset["input_ids"]
    labels = dataset["labels"] if "labels" in dataset.column_names else input_ids
    bins = plan_bins([len(ids) for ids in input_ids], block_size)
    random.Random(seed).shuffle(bins)
    rows: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for members in bins:
        row_ids: list[int] = []
        row_labels: list[int] = []
        row_positions: list[int] = []
        for i in members:
            row_ids.extend(input_ids[i])
            row_labels.append(IGNORE_INDEX)
            row_labels.extend(labels[i][1:])
            row_positions.extend(range(len(input_ids[i])))
        rows["input_ids"].append(row_ids)
        rows["labels"].append(row_labels)
        rows["position_ids"].append(row_positions)
    return Dataset.from_dict(rows)


def padding_ratio(lengths: Sequence[int], padded_lengths: Sequence[int]) -> float:
    """Share of the tokens computed on that are padding."""
    total = sum(padded_lengths)
    return 0.0 if total == 0 else 1.0 - sum(lengths) / total


def length_grouped_batches(
    lengths: Sequence[int], *, batch_size: int, seed: int = 0, megabatch_batches: int = 50
) -> list[list[int]]:
    """Batches of indices whose lengths are close, in a shuffled order: the alternative to packing.

    As transformers' LengthGroupedSampler: shuffle, cut into megabatches of `megabatch_batches`
    batches, sort each megabatch by length, cut into batches, then shuffle the batches, so padding is
    small but the order stays random. Usable as a DataLoader `batch_sampler`.
    """
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * megabatch_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        megabatch = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches.extend(megabatch[i : i + batch_size] for i in range(0, len(megabatch), batch_size))
    rng.shuffle(batches)
    return batches


@dataclass
class PaddingCollator:
    """Right-pads a batch: to its longest example (dynamic padding) or to a fixed `pad_to_length`.

    `pad_to_length=max_len` reproduces transformers' padding="max_length" (every row padded to the limit), kept
    for comparison.
    Labels are padded with -100 and attention_mask with 0.
    """

    pad_token_id: int
    pad_to_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        width = self.pad_to_length or longest
        if width < longest:
            raise UserInputError(f"an example has {longest} tokens, more than pad_to_length {width}")
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids, mask, labels = [], [], []
        for feature in features:
            n = len(feature["input_ids"])
            pad = width - n
            ids.append(list(feature["input_ids"]) + [self.pad_token_id] * pad)
            mask.append([1] * n + [0] * pad)
            labels.append(list(feature.get("labels", feature["input_ids"])) + [IGNORE_INDEX] * pad)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }


@dataclass
class PackedCollator:
    """Batches packed rows (from `pack_examples`) with position_ids and no attention mask.

    Rows shorter than the longest are filled with pad tokens that form their own position run
    (0, 1, ...) with labels -100, so they neither attend to nor are attended by real tokens.
    `flatten=True` concatenates the whole batch into one row instead (DataCollatorWithFlattening
    style), the layout flash-attention's varlen kernel wants. Plain unpacked examples work too: each
    becomes its own run.
    """

    pad_token_id: int
    flatten: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows = [self._row(f) for f in features]
        if self.flatten:
            flat_ids, flat_labels, flat_positions = (
                list(itertools.chain.from_iterable(r[k] for r in rows)) for k in range(3)
            )
            rows = [(flat_ids, flat_labels, flat_positions)]
        width = max(len(r[0]) for r in rows)
        ids, labels, positions = [], [], []
        for row_ids, row_labels, row_positions in rows:
            pad = width - len(row_ids)
            ids.append(row_ids + [self.pad_token_id] * pad)
            labels.append(row_labels + [IGNORE_INDEX] * pad)
            positions.append(row_positions + list(range(pad)))
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(positions, dtype=torch.long),
            # Packed-sequence masks are only derived from position_ids when there is no KV cache.
            "use_cache": False,
        }

    @staticmethod
    def _row(feature: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
        ids = list(feature["input_ids"])
        if "position_ids" in feature:
            return ids, list(feature["labels"]), list(feature["position_ids"])
        labels = list(feature.get("labels", ids))
        return ids, [IGNORE_INDEX] + labels[1:], list(range(len(ids)))
