"""What is in a dataset before training on it: sizes, labels, duplicates, and token lengths with
the model's own tokenizer (how many records exceed --max-len and would be truncated).

Token lengths are measured on exactly the text the model sees: chats rendered through the chat
template that training resolves (data/templates.py), documents plus their eos separator,
classifier inputs with the tokenizer's special tokens.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.data.dedup import DuplicateReport, find_duplicates
from lmforge.data.kinds import Kind
from lmforge.errors import NotFoundError, UserInputError
from lmforge.fileio import atomic_save_figure

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset

_BATCH_ROWS = 1000


@dataclass
class LengthStats:
    """Percentiles of a length distribution (numpy's "higher" method: every figure is a real record's length)."""

    mean: float
    p50: int
    p90: int
    p99: int
    max: int
    total: int


@dataclass
class TokenStats:
    tokens: LengthStats
    template: str | None  # the chat template used to render chats, as training would resolve it
    max_len: int | None
    over_max_len: int  # records longer than max_len: truncated (or dropped) at training
    histogram_path: str | None


@dataclass
class DataStats:
    kind: str
    records: int
    chars: LengthStats
    duplicates: DuplicateReport
    turns_mean: float | None = None  # chat: messages per conversation
    label_counts: dict[str, int] | None = None  # classification / unpaired preference
    tokens: TokenStats | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def length_stats(lengths: np.ndarray) -> LengthStats:
    import numpy as np

    if len(lengths) == 0:
        return LengthStats(0.0, 0, 0, 0, 0, 0)

    def percentile(q: float) -> int:
        return int(np.percentile(lengths, q, method="higher"))

    return LengthStats(
        mean=round(float(lengths.mean()), 2),
        p50=percentile(50),
        p90=percentile(90),
        p99=percentile(99),
        max=int(lengths.max()),
        total=int(lengths.sum()),
    )


def load_tokenizer(
    path: str | os.PathLike[str], setting: str = "--tokenizer", *, trust_remote_code: bool = False
) -> Any:
    """A tokenizer from a local model, tokenizer or training-run folder (never downloaded).

    `setting` is how the user named the folder (--tokenizer, model.tokenizer), for the one-line error: a
    folder without tokenizer files makes transformers suggest installing sentencepiece, which never helps.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise NotFoundError(f"no tokenizer folder at {path}; pass a local model directory with {setting}")
    if (folder / "final").is_dir():  # an lmforge run: its tokenizer (with the trained template) is in RUN/final
        folder = folder / "final"
    if not any(folder.glob("tokenizer*")) and not any(folder.glob("vocab*")):
        raise NotFoundError(
            f"{folder} holds no tokenizer files (tokenizer.json, tokenizer_config.json, "
            f"tokenizer.model, vocab.*); set {setting} to the folder of the tokenizer this model "
            "was trained with"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise NotFoundError(
            f"{path} holds no loadable tokenizer ({str(error).splitlines()[0]}); set {setting} to "
            "a folder with a working one"
        ) from error


def _rows(batch: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(batch)
    return [dict(zip(keys, values, strict=True)) for values in zip(*(batch[k] for k in keys), strict=True)]


def _char_length(record: dict[str, Any], kind: Kind) -> int:
    if kind in (Kind.TEXT, Kind.CLASSIFICATION):
        return len(record["text"]) + len(record.get("text_pair") or "")
    if kind is Kind.CHAT:
        return sum(len(m["content"]) for m in record["messages"])
    replies = record["completion"] if kind is Kind.UNPAIRED_PREFERENCE else record["chosen"] + record["rejected"]
    return sum(len(m["content"]) for m in record["prompt"] + replies)


def _token_lengths(batch: list[dict[str, Any]], kind: Kind, tokenizer: Any, template: Any) -> list[int]:
    """Tokens the model sees per record; a preference pair counts its longer side."""
    if kind is Kind.TEXT:
        # tokenize_text joins documents with one eos token each.
        encoded = tokenizer([r["text"] for r in batch], add_special_tokens=False)["input_ids"]
        return [len(ids) + 1 for ids in encoded]
    if kind is Kind.CLASSIFICATION:
        pairs = [r.get("text_pair") for r in batch]
        texts = [r["text"] for r in batch]
        encoded = tokenizer(texts, pairs if any(pairs) else None)["input_ids"]
        return [len(ids) for ids in encoded]
    conversations: list[list[list[dict[str, str]]]] = []
    for record in batch:
        if kind is Kind.CHAT:
            conversations.append([record["messages"]])
        elif kind is Kind.PREFERENCE:
            conversations.append([record["prompt"] + record["chosen"], record["prompt"] + record["rejected"]])
        else:
            conversations.append([record["prompt"] + record["completion"]])
    rendered = [template.render(tokenizer, messages) for group in conversations for messages in group]
    # The template already writes every special marker (as tokenize_chat does).
    lengths = iter(len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return [max(next(lengths) for _ in group) for group in conversations]


def compute_stats(
    dataset: Dataset,
    kind: Kind,
    *,
    tokenizer: Any = None,
    max_len: int | None = None,
    template: str | None = None,
    label_names: list[str] | None = None,
    histogram_path: str | os.PathLike[str] | None = None,
) -> DataStats:
    """Sizes, label balance and duplicates; with a tokenizer, token-length percentiles, the count over
    `max_len`, and optionally a histogram PNG."""
    import numpy as np

    if max_len is not None and max_len < 1:
        raise UserInputError(f"--max-len must be a positive number of tokens, got {max_len}")
    if histogram_path is not None and tokenizer is None:
        raise UserInputError("a token-length histogram needs --tokenizer")
    resolved = None
    if tokenizer is not None and kind not in (Kind.TEXT, Kind.CLASSIFICATION):
        from lmforge.data.templates import resolve_template

        resolved = resolve_template(tokenizer, template)
    chars = np.zeros(len(dataset), dtype=np.int64)
    tokens = np.zeros(len(dataset), dtype=np.int64) if tokenizer is not None else None
    turns = 0
    labels: dict[Any, int] = {}
    row = 0
    for batch in dataset.iter(batch_size=_BATCH_ROWS):
        records = _rows(batch)
        for record in records:
            chars[row] = _char_length(record, kind)
            row += 1
            if kind is Kind.CHAT:
                turns += len(record["messages"])
            if kind in (Kind.CLASSIFICATION, Kind.UNPAIRED_PREFERENCE):
                labels[record["label"]] = labels.get(record["label"], 0) + 1
        if tokens is not None:
            tokens[row - len(records) : row] = _token_lengths(records, kind, tokenizer, resolved)
    stats = DataStats(
        kind=kind.value,
        records=len(dataset),
        chars=length_stats(chars),
        duplicates=find_duplicates(dataset, kind),
        turns_mean=round(turns / len(dataset), 2) if kind is Kind.CHAT and len(dataset) else None,
        label_counts=_named_labels(labels, label_names) if labels else None,
    )
    if tokens is not None:
        over = int((tokens > max_len).sum()) if max_len is not None else 0
        written = None
        if histogram_path is not None:
            written = str(write_histogram(tokens, histogram_path, max_len))
        stats.tokens = TokenStats(length_stats(tokens), resolved.name if resolved else None, max_len, over, written)
    return stats


def _named_labels(counts: dict[Any, int], names: list[str] | None) -> dict[str, int]:
    def name(label: Any) -> str:
        if names is not None and isinstance(label, int) and not isinstance(label, bool) and label < len(names):
            return names[label]
        return str(label).lower() if isinstance(label, bool) else str(label)

    return {name(label): count for label, count in sorted(counts.items(), key=lambda item: str(item[0]))}


def write_histogram(lengths: np.ndarray, path: str | os.PathLike[str], max_len: int | None = None) -> Path:
    """A PNG of the token-length distribution with the max-length cut marked, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(lengths, bins=min(50, max(1, len(set(lengths.tolist())))), color="#4477aa")
    if max_len is not None:
        axes.axvline(max_len, color="#cc3311", linestyle="--", label=f"max_len {max_len}")
        axes.legend()
    axes.set_xlabel("tokens per record")
    axes.set_ylabel("records")
    axes.set_title(f"Token lengths of {len(lengths)} records")
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=100)


@dataclass
class PreviewRecord:
    """One record as the model sees it: named parts of (text, trained?) runs, decoded from the real tokens."""

    location: str
    tokens: int
    truncated: bool
    parts: list[tuple[str | None, list[tuple[str, bool]]]]
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _runs(tokenizer: Any, input_ids: list[int], trained: list[bool]) -> list[tuple[str, bool]]:
    """Consecutive tokens with the same mask state, decoded together (so multi-byte characters survive)."""
    runs: list[tuple[str, bool]] = []
    start = 0
    for end in range(1, len(input_ids) + 1):
        if end == len(input_ids) or trained[end] != trained[start]:
            runs.append((tokenizer.decode(input_ids[start:end], skip_special_tokens=False), trained[start]))
            start = end
    return runs


def preview_records(
    result: Any,
    tokenizer: Any,
    *,
    n: int = 3,
    max_len: int | None = None,
    template: str | None = None,
    train_on_prompt: bool = False,
) -> list[PreviewRecord]:
    """The first `n` records of a LoadResult rendered and tokenized the way training does it
    (data/tokenize.py's encode_chat), with the label mask: what `lmforge data preview` prints."""
    from lmforge.data.templates import resolve_template
    from lmforge.data.tokenize import IGNORE_INDEX, encode_chat

    if n < 1:
        raise UserInputError(f"-n must be at least 1, got {n}")
    kind = result.kind
    limit = max_len if max_len is not None else 1 << 62
    chosen = resolve_template(tokenizer, template) if kind not in (Kind.TEXT, Kind.CLASSIFICATION) else None
    shown: list[PreviewRecord] = []
    for index in range(min(n, len(result.dataset))):
        record = result.dataset[index]
        location = f"record {index + 1}"
        if kind in (Kind.TEXT, Kind.CLASSIFICATION):
            if kind is Kind.TEXT:
                ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            else:
                ids = tokenizer(record["text"], record.get("text_pair"))["input_ids"]
            note = None
            if kind is Kind.CLASSIFICATION:
                names = result.label_names
                note = f"label: {names[record['label']] if names else record['label']}"
            kept = ids[:limit]
            shown.append(
                PreviewRecord(
                    location, len(kept), len(ids) > limit, [(None, _runs(tokenizer, kept, [True] * len(kept)))], note
                )
            )
            continue
        conversations: list[tuple[str | None, list[dict[str, str]]]]
        if kind is Kind.CHAT:
            conversations = [(None, record["messages"])]
        elif kind is Kind.PREFERENCE:
            conversations = [
                ("chosen", record["prompt"] + record["chosen"]),
                ("rejected", record["prompt"] + record["rejected"]),
            ]
        else:
            conversations = [(None, record["prompt"] + record["completion"])]
        assert chosen is not None  # resolved above for every kind that is not TEXT or CLASSIFICATION
        parts, tokens, truncated = [], 0, False
        for title, messages in conversations:
            encoded = encode_chat(messages, tokenizer, chosen, max_len=limit, train_on_prompt=train_on_prompt)
            trained = [label != IGNORE_INDEX for label in encoded["labels"]]
            parts.append((title, _runs(tokenizer, encoded["input_ids"], trained)))
            tokens = max(tokens, len(encoded["input_ids"]))
            truncated = truncated or encoded["_dropped_tokens"] > 0
        note = (
            f"label: {'desirable' if record['label'] else 'undesirable'}" if kind is Kind.UNPAIRED_PREFERENCE else None
        )
        shown.append(PreviewRecord(location, tokens, truncated, parts, note))
    return shown
