"""Prepared data: a run's train and validation sets loaded, validated and tokenized once, into RUN/data.

RUN/data/
  summary.json   the fingerprint and what loading and tokenization did to each split (DataSummary)
  train/         what the stage trains on (datasets save_to_disk), memory-mapped by every process
  eval/          the validation set, when there is one

A multi-process run used to tokenize in every process, rank 0 sometimes for longer than the other
ranks' NCCL timeout. Now `launch()` and `lmforge train --prepare-only` prepare
before any process starts, run_training reuses RUN/data while its fingerprint matches (so --resume
does not tokenize again either), and a run started without it prepares on rank 0 while the other
ranks wait for the folder, before any of them joins the process group.

Stages that tokenize themselves (pretrain, sft, distill, classify, mlm: a `tokenize` function) save
the tokenized sets; for the TRL stages (rm, dpo, kto, orpo, rlhf) RUN/data holds the validated
canonical sets and TRL tokenizes at train time (its datasets.map caches beside RUN/data/train).
The folder is written with fileio.atomic_directory: it is complete or absent, never half-written.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import UserInputError
from lmforge.fileio import atomic_directory, atomic_write_json, writable_folder
from lmforge.train.config import TrainConfig
from lmforge.train.context import DDP_TIMEOUT_SECONDS, load_stage_data, stage_module

# Part of the fingerprint: raise it when what prepare writes changes, so older RUN/data is rebuilt.
PREPARED_FORMAT = 2
CHAT_STAGES = ("sft", "rm", "dpo", "kto", "orpo", "rlhf", "distill")


@dataclass
class SplitSummary:
    """One split's books: examples_in = examples_out + rejected + dropped_examples.

    `sequences` are the rows trained on (pretrain: blocks of max_len tokens, else one per example).
    Token counts are None where TRL tokenizes at train time; `trained_tokens` counts tokens with a
    label (sft/distill: assistant tokens only) and is None where no label mask applies (classify, mlm).
    """

    source: str
    examples_in: int
    rejected: int  # refused by validation while loading
    dropped_examples: int  # truncation left no token to train on
    examples_out: int
    truncated_examples: int | None  # cut at data.max_len (kept or dropped)
    dropped_tokens: int | None  # tokens cut away by that truncation
    sequences: int
    tokens: int | None
    trained_tokens: int | None


@dataclass
class DataSummary:
    """RUN/data/summary.json."""

    stage: str
    kind: str
    fingerprint: str
    tokenized: bool  # False: TRL tokenizes at train time
    packed: bool  # examples packed into rows of max_len tokens (lmforge.train.packing)
    max_len: int
    template: str | None
    label_names: list[str] | None
    splits: dict[str, SplitSummary] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataSummary:
        splits = {name: SplitSummary(**split) for name, split in data["splits"].items()}
        return cls(**{**data, "splits": splits})

    def describe(self, split: str = "train") -> str:
        """One line for the console and the model card."""
        s = self.splits[split]
        line = f"{s.examples_out:,} of {s.examples_in:,} examples"
        if s.rejected:
            line += f" ({s.rejected:,} rejected)"
        if s.truncated_examples:
            line += f", {s.truncated_examples:,} truncated at max_len {self.max_len}"
        if s.dropped_examples:
            line += f", {s.dropped_examples:,} dropped (no response token left)"
        if s.tokens is None:
            return line + " (TRL tokenizes them at train time, cached beside RUN/data)"
        line += f"; {s.sequences:,} {'packed rows' if self.packed else 'sequences'}, {s.tokens:,} tokens"
        return line + (f" ({s.trained_tokens:,} trained)" if s.trained_tokens is not None else "")


@dataclass
class PreparedData:
    train: Any
    eval: Any | None
    summary: DataSummary
    reused: bool  # read back from RUN/data rather than built now


def fix_chat_template(config: TrainConfig, tokenizer: Any) -> str | None:
    """Resolve the chat template once (lmforge.data.templates) and set it on the tokenizer, so TRL's
    own tokenization, tokenize_chat and final/'s saved tokenizer all use the one the model trained
    with."""
    if config.stage not in CHAT_STAGES:
        return None
    from lmforge.data.templates import resolve_template

    template = resolve_template(tokenizer, config.data.template)
    tokenizer.chat_template = template.jinja
    return template.name


def run_tokenizer(config: TrainConfig, run_dir: Path, main: bool = True) -> tuple[Any, str | None]:
    """The tokenizer a run trains with, its chat template fixed: (tokenizer, template name)."""
    from lmforge.train.loading import load_training_tokenizer

    tokenizer = load_training_tokenizer(config, run_dir, main)
    return tokenizer, fix_chat_template(config, tokenizer)


def _source_stamp(source: str | None) -> Any:
    """A data source as the fingerprint sees it: local files by path, size and modification time, so
    an edited file invalidates RUN/data; a builtin or hub name by its name."""
    if source is None or source.startswith("builtin:"):
        return source
    pattern = os.path.expanduser(source)
    paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p]) if f.is_file()]
    return [source] + [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _tokenizer_stamp(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    special = [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id]
    return hashlib.sha256(json.dumps([vocabulary, tokenizer.chat_template, special]).encode()).hexdigest()


def data_fingerprint(config: TrainConfig, tokenizer: Any, packed: bool) -> str:
    """What RUN/data depends on: the stage, the data section, the seed (builtin sets and the held-out
    split are seeded), the source files, the tokenizer with its chat template, whether it is packed (which
    data.packing: auto decides by the architecture), and lmforge's version."""
    from lmforge import __version__

    data = config.data
    parts = [
        PREPARED_FORMAT,
        __version__,
        config.stage,
        data.model_dump(mode="json"),
        config.train.seed,
        _source_stamp(data.train),
        _source_stamp(data.eval),
        _tokenizer_stamp(tokenizer),
        packed,
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _count_tokens(dataset: Any) -> tuple[int, int | None]:
    """(tokens, trained tokens): the lengths of input_ids, and the labels that are not -100 (counted in
    Arrow, so a large set is never turned into Python lists)."""
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    tokens = int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0)
    if "labels" not in table.column_names:
        return tokens, None
    # -100 is the label torch's cross_entropy ignores (lmforge.data.tokenize.IGNORE_INDEX)
    trained = pc.sum(pc.not_equal(pc.list_flatten(table.column("labels")), -100)).as_py()
    return tokens, int(trained or 0)


def _split(
    config: TrainConfig, tokenizer: Any, stage: Any, dataset: Any, source: str, rejected: int, packed: bool
) -> tuple[Any, SplitSummary]:
    tokenize = getattr(stage, "tokenize", None)
    if tokenize is None:
        n = len(dataset)
        return dataset, SplitSummary(source, n + rejected, rejected, 0, n, None, None, n, None, None)
    result = tokenize(config, tokenizer, dataset, packed=True) if packed else tokenize(config, tokenizer, dataset)
    tokens, trained = _count_tokens(result.dataset)
    return result.dataset, SplitSummary(
        source=source,
        examples_in=result.examples_in + rejected,
        rejected=rejected,
        dropped_examples=result.dropped_examples,
        examples_out=result.examples_in - result.dropped_examples,
        truncated_examples=result.truncated_examples,
        dropped_tokens=result.dropped_tokens,
        sequences=len(result.dataset),
        tokens=tokens,
        trained_tokens=trained,
    )


def build_data(
    config: TrainConfig, tokenizer: Any, fingerprint: str, template: str | None, packed: bool = False
) -> PreparedData:
    """Load, validate and tokenize the config's data exactly as its stage trains on it (not saved)."""
    stage = stage_module(config.stage)
    loaded = load_stage_data(config, stage.DATA_KIND)
    data = config.data
    train, train_summary = _split(config, tokenizer, stage, loaded.train, data.train, loaded.train_rejected, packed)
    splits = {"train": train_summary}
    evaluation = None
    if loaded.eval is not None:
        source = data.eval or f"{data.train} (held out)"
        evaluation, splits["eval"] = _split(config, tokenizer, stage, loaded.eval, source, loaded.eval_rejected, packed)
    summary = DataSummary(
        stage=config.stage,
        kind=loaded.kind,
        fingerprint=fingerprint,
        tokenized=hasattr(stage, "tokenize"),
        packed=packed,
        max_len=data.max_len,
        template=template,
        label_names=loaded.label_names,
        splits=splits,
    )
    return PreparedData(train, evaluation, summary, reused=False)


def save_data(prepared: PreparedData, folder: Path) -> None:
    """RUN/data, complete or absent: written beside it, then renamed over it."""
    with atomic_directory(folder) as temporary:
        prepared.train.save_to_disk(str(temporary / "train"))
        if prepared.eval is not None:
            prepared.eval.save_to_disk(str(temporary / "eval"))
        atomic_write_json(temporary / "summary.json", prepared.summary.to_dict())


def load_data_folder(folder: Path, fingerprint: str) -> PreparedData | None:
    """RUN/data if it was prepared for this fingerprint and reads back whole; None otherwise."""
    import pyarrow
    from datasets import load_from_disk

    try:
        summary = DataSummary.from_json(json.loads((folder / "summary.json").read_text(encoding="utf-8")))
        if summary.fingerprint != fingerprint:
            return None
        train = load_from_disk(str(folder / "train"))
        evaluation = load_from_disk(str(folder / "eval")) if "eval" in summary.splits else None
    except (OSError, ValueError, KeyError, TypeError, pyarrow.ArrowException):
        return None  # missing, foreign or damaged: prepared again
    sizes = {"train": train, "eval": evaluation}
    if any(len(sizes[name]) != split.sequences for name, split in summary.splits.items()):
        return None
    return PreparedData(train, evaluation, summary, reused=True)


def run_packing(config: TrainConfig, tokenizer: Any) -> bool:
    """Whether this run's data is packed: data.packing for its stage and its model's architecture."""
    from lmforge.train.packing import PACKING_STAGES, resolve_packing
    from lmforge.train.planning import hf_config

    if config.stage not in PACKING_STAGES and config.data.packing != "on":
        return False
    return resolve_packing(config, hf_config(config, tokenizer).model_type)


def prepare_data(
    config: TrainConfig, tokenizer: Any, template: str | None, run_dir: Path, *, main: bool = True
) -> PreparedData:
    """The run's prepared data: RUN/data when its fingerprint matches, else built now. `tokenizer` and
    `template` are run_tokenizer's.

    The main process (or a single process) builds and saves it; any other process waits for that
    folder (up to DDP_TIMEOUT_SECONDS) rather than tokenizing its own copy. The wait happens before
    the process group exists, so no collective can time out meanwhile.
    """
    folder = run_dir / "data"
    packed = run_packing(config, tokenizer)
    fingerprint = data_fingerprint(config, tokenizer, packed)
    prepared = load_data_folder(folder, fingerprint)
    if prepared is not None:
        return prepared
    if main:
        prepared = build_data(config, tokenizer, fingerprint, template, packed)
        save_data(prepared, folder)
        # Read back memory-mapped: training runs on the saved files exactly as a resumed run would.
        saved = load_data_folder(folder, fingerprint)
        assert saved is not None, f"{folder} did not read back"  # a bug in lmforge, not the user's fault
        return PreparedData(saved.train, saved.eval, saved.summary, reused=False)
    deadline = time.monotonic() + DDP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(1.0)
        prepared = load_data_folder(folder, fingerprint)
        if prepared is not None:
            return prepared
    raise UserInputError(
        f"waited {DDP_TIMEOUT_SECONDS} s for rank 0 to prepare {folder}; run `lmforge train CONFIG --prepare-only` "
        "before `accelerate launch` (on every node when the run folder is not on a shared filesystem)"
    )


def prepare_run(config: TrainConfig) -> PreparedData:
    """`lmforge train CONFIG --prepare-only` and `launch()`: the run's tokenizer (a bpe:N one is trained
    and saved in RUN/tokenizer) and RUN/data, before any training process starts."""
    run_dir = writable_folder(config.out, setting="out")
    tokenizer, template = run_tokenizer(config, run_dir)
    return prepare_data(config, tokenizer, template, run_dir)
