"""The data layer: dataset kinds, loading, validation, split, templates, tokenization, packing (docs/data.md).

    from lmforge.data import load_data, split_dataset, write_splits
    loaded = load_data("train.jsonl", on_error="skip", rejects_path=default_rejects_path("train.jsonl"))
    parts = split_dataset(loaded.dataset, loaded.kind, ratios="8,1,1", seed=0)

Names load on first use (lmforge.lazy), so `import lmforge.data` imports neither datasets nor torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

if TYPE_CHECKING:
    from lmforge.data.builtin import BUILTIN_DATASETS, get_builtin, load_builtin, prompt_messages
    from lmforge.data.dedup import DuplicateReport, drop_duplicates, find_duplicates
    from lmforge.data.kinds import Kind
    from lmforge.data.load import LoadResult, default_rejects_path, load_data, save_jsonl
    from lmforge.data.pack import PackedCollator, PaddingCollator, length_grouped_batches, pack_examples
    from lmforge.data.split import SplitReport, SplitResult, split_dataset, write_splits
    from lmforge.data.stats import DataStats, PreviewRecord, compute_stats, preview_records
    from lmforge.data.templates import BUILTIN_TEMPLATES, ChatTemplate, resolve_template
    from lmforge.data.tokenize import IGNORE_INDEX, encode_chat, tokenize_chat, tokenize_documents, tokenize_text
    from lmforge.data.tokenizer import train_bpe_tokenizer
    from lmforge.data.validate import ValidationReport

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_TEMPLATES",
    "IGNORE_INDEX",
    "ChatTemplate",
    "DataStats",
    "DuplicateReport",
    "Kind",
    "LoadResult",
    "PackedCollator",
    "PaddingCollator",
    "PreviewRecord",
    "SplitReport",
    "SplitResult",
    "ValidationReport",
    "compute_stats",
    "default_rejects_path",
    "drop_duplicates",
    "encode_chat",
    "find_duplicates",
    "get_builtin",
    "length_grouped_batches",
    "load_builtin",
    "load_data",
    "pack_examples",
    "preview_records",
    "prompt_messages",
    "resolve_template",
    "save_jsonl",
    "split_dataset",
    "tokenize_chat",
    "tokenize_documents",
    "tokenize_text",
    "train_bpe_tokenizer",
    "write_splits",
]
__getattr__, __dir__ = lazy_exports(__name__)
