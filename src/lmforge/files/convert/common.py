"""What every conversion shares: its report, size parsing, progress bars, side files, input loading.

Every converter reads its input through lmforge's own gates (the pickle scanner + safe_torch_load,
safetensors' safe_open) and writes through lmforge.fileio's atomic helpers, so a failed conversion
leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import FormatError, NotFoundError, UserInputError
from lmforge.files.detect import SAFETENSORS_INDEX, detect_format

PICKLE_INDEX = "pytorch_model.bin.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack")
# Files a model folder carries besides weights (config, tokenizer, generation config, chat template).
_SKIPPED_SIDE_FILES = {SAFETENSORS_INDEX, PICKLE_INDEX}


@dataclass
class ConvertReport:
    """What a conversion wrote and how it was checked; rendered by the CLI, serialised by --json."""

    source: str
    destination: str
    to: str
    quant: str | None
    files: list[str]
    tensor_count: int
    params: int
    size_bytes: int
    seconds: float
    verified: bool
    checks: dict[str, Any] = field(default_factory=dict)  # e.g. max_abs_error per dtype, logits difference
    aliases: dict[str, str] = field(default_factory=dict)  # removed shared tensor → the name kept
    skipped: list[str] = field(default_factory=list)  # entries that are not tensors (optimizer state, step)
    copied: list[str] = field(default_factory=list)  # config/tokenizer files copied beside the weights
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
# Decimal and binary units as transformers' convert_file_size_to_int reads them (5GB = 5e9, 5GiB = 5·2^30).
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def parse_size_bytes(size: str | int) -> int:
    """'5GB' → 5_000_000_000, '500MiB' → 524_288_000, 1000 → 1000."""
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE.match(size)
        unit = match.group(2).upper() if match else ""
        if not match or unit not in _UNITS:
            raise UserInputError(f"cannot read size {size!r}: use a number with KB/MB/GB (decimal) or KiB/MiB/GiB")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UserInputError(f"size must be positive, got {size!r}")
    return value


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr; yields `advance(n=1)`. Silent when disabled."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def copy_side_files(source_dir: Path, destination_dir: Path) -> list[str]:
    """Copy config, tokenizer and other non-weight files of a model folder; return their names."""
    copied = []
    for path in sorted(source_dir.iterdir()):
        if not path.is_file() or path.name in _SKIPPED_SIDE_FILES or path.name.startswith("."):
            continue
        if path.suffix in WEIGHT_SUFFIXES or re.search(r"\.(bin|safetensors)\.index\.json$", path.name):
            continue
        shutil.copy2(path, destination_dir / path.name)
        copied.append(path.name)
    return copied


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise FormatError(f"{path} holds {type(value).__name__}, expected a JSON object")
    return value


def weight_files(folder: Path) -> tuple[list[Path], str]:
    """The weight files of an HF model folder and their kind ('safetensors' or 'pickle'); safetensors win."""
    for index_name, kind in ((SAFETENSORS_INDEX, "safetensors"), (PICKLE_INDEX, "pickle")):
        index = folder / index_name
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise FormatError(f"{index} has no weight_map")
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            missing = [path.name for path in files if not path.is_file()]
            if missing:
                raise NotFoundError(f"{index} names shard(s) that are missing: {', '.join(missing)}")
            return files, kind
    for name, kind in (("model.safetensors", "safetensors"), ("pytorch_model.bin", "pickle")):
        if (folder / name).is_file():
            return [folder / name], kind
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        return safetensors, "safetensors"
    pickles = sorted(path for suffix in (".bin", ".pt", ".pth") for path in folder.glob(f"*{suffix}"))
    if pickles:
        return pickles, "pickle"
    raise NotFoundError(f"{folder} holds no weights (model.safetensors, pytorch_model.bin or shards with an index)")


def load_safetensors_tensors(files: list[Path]) -> dict[str, Any]:
    """All tensors of safetensors files as torch tensors (memory-mapped by safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for path in files:
        if detect_format(path) != "safetensors":
            raise FormatError(f"{path} is not a safetensors file")
        try:
            tensors.update(load_file(path))
        except SafetensorError as error:
            raise FormatError(f"{path}: {error}") from None
    return tensors
