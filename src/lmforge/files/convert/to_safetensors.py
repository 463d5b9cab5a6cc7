"""Pickle checkpoints (.bin/.pt/.pth, zip or legacy, or an HF folder of them) → safetensors.

Every pickle goes through safe_torch_load (scan first, refuse unsafe, then weights_only) before
anything is written. Tensors that share storage are written once, the way
safetensors.torch.save_model does it: identical views keep the first name in state-dict order and
the dropped names are recorded in the metadata as `dropped → kept`; partial views of one storage
are copied so each is saved on its own. Output is sharded with a model.safetensors.index.json
when it exceeds the shard size, then read back and compared tensor by tensor.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge.errors import FormatError, UserInputError
from lmforge.fileio import atomic_directory, atomic_path, atomic_write_json
from lmforge.files.convert.common import (
    ConvertReport,
    copy_side_files,
    load_safetensors_tensors,
    progress_bar,
    weight_files,
)
from lmforge.files.detect import SAFETENSORS_INDEX, detect_format
from lmforge.files.safe_load import safe_torch_load

PICKLE_FORMATS = ("torch-zip", "torch-legacy", "pickle")
DEFAULT_SHARD_SIZE_BYTES = 5 * 10**9  # transformers' save_pretrained default max_shard_size="5GB"
# Keys under which training scripts nest the weights next to optimizer state, epoch, etc.
_NESTED_WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "module", "weights")


def _is_tensor_mapping(value: Any) -> bool:
    import torch

    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _flatten(value: Any, prefix: str, tensors: dict[str, Any], skipped: list[str]) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), tensors, skipped)
    else:
        skipped.append(prefix or "<root>")


def extract_state_dict(loaded: Any, source: Path) -> tuple[dict[str, Any], list[str]]:
    """The tensors of a loaded checkpoint: a plain state dict, one nested under 'state_dict'/'model'/…
    (the other entries are reported as skipped), or any nested dicts of tensors with dotted names."""
    if _is_tensor_mapping(loaded):
        return dict(loaded), []
    if isinstance(loaded, Mapping):
        for key in _NESTED_WEIGHT_KEYS:
            if _is_tensor_mapping(loaded.get(key)):
                return dict(loaded[key]), [str(other) for other in loaded if other != key]
    tensors: dict[str, Any] = {}
    skipped: list[str] = []
    _flatten(loaded, "", tensors, skipped)
    if not tensors:
        raise FormatError(f"{source} holds no tensors (found {type(loaded).__name__}); nothing to convert")
    return tensors, skipped


def dedupe_shared(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Drop names that alias another tensor (same storage, offset, shape, stride); copy partial views.

    Returns the tensors to save and {dropped name: kept name}, as safetensors.torch.save_model does.
    """
    from safetensors.torch import _find_shared_tensors

    order = {name: position for position, name in enumerate(tensors)}
    result = dict(tensors)
    aliases: dict[str, str] = {}
    for group in _find_shared_tensors(tensors):
        if len(group) < 2:
            continue
        names = sorted(group, key=order.__getitem__)
        kept = result[names[0]]
        for name in names[1:]:
            tensor = result[name]
            same_view = (
                tensor.data_ptr() == kept.data_ptr()
                and tensor.shape == kept.shape
                and tensor.stride() == kept.stride()
                and tensor.dtype == kept.dtype
            )
            if same_view:
                aliases[name] = names[0]
                del result[name]
            else:
                result[name] = tensor.clone()
    return {name: tensor.contiguous() for name, tensor in result.items()}, aliases


def plan_shards(tensors: dict[str, Any], shard_size_bytes: int) -> list[list[str]]:
    """Names per shard, in order, each shard at most shard_size_bytes (a bigger tensor gets its own),
    as transformers' split_torch_state_dict_into_shards packs them."""
    shards: list[list[str]] = [[]]
    current = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and current + size > shard_size_bytes:
            shards.append([])
            current = 0
        shards[-1].append(name)
        current += size
    return shards


def _load_source(source: Path, trust_pickle: bool, progress: bool) -> tuple[dict[str, Any], list[str], bool]:
    """(tensors, skipped entries, source is a folder)."""
    fmt = detect_format(source)
    if source.is_dir():
        files, kind = weight_files(source)
    elif fmt in PICKLE_FORMATS:
        files, kind = [source], "pickle"
    elif fmt in ("safetensors", "safetensors-sharded"):
        files, kind = [source], "safetensors"
    else:
        raise FormatError(
            f"{source} is {fmt}; convert to safetensors reads torch checkpoints (.bin/.pt/.pth) or an HF model folder"
        )
    if kind == "safetensors":
        return load_safetensors_tensors(files), [], source.is_dir()
    tensors: dict[str, Any] = {}
    skipped: list[str] = []
    with progress_bar("scanning and loading", len(files), progress and len(files) > 1) as advance:
        for path in files:
            loaded, dropped = extract_state_dict(safe_torch_load(path, trust_pickle=trust_pickle), path)
            tensors.update(loaded)
            skipped += dropped
            advance()
    return tensors, skipped, source.is_dir()


def _verify(files: list[Path], saved: dict[str, Any], aliases: dict[str, str]) -> None:
    """Read every written file back: same names, dtypes, shapes and values, and the recorded aliases."""
    import torch
    from safetensors import safe_open

    seen: set[str] = set()
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            for name in handle.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                read = handle.get_tensor(name)
                original = saved[name]
                if read.dtype != original.dtype or read.shape != original.shape or not torch.equal(read, original):
                    raise FormatError(f"read-back of {path.name} differs at tensor {name}")
                seen.add(name)
            for dropped, kept in aliases.items():
                if dropped in metadata and metadata[dropped] != kept:
                    raise FormatError(f"{path.name} records alias {dropped} → {metadata[dropped]}, expected {kept}")
    if seen != set(saved):
        raise FormatError(f"read-back is missing {len(set(saved) - seen)} tensor(s)")


def to_safetensors(
    source: Path,
    destination: Path,
    *,
    shard_size_bytes: int = DEFAULT_SHARD_SIZE_BYTES,
    trust_pickle: bool = False,
    progress: bool = True,
) -> ConvertReport:
    """Convert a pickle checkpoint (file or HF folder) to safetensors at `destination`.

    `destination` ending in .safetensors is one file; anything else is a folder that receives
    model.safetensors (or shards + index) and the source folder's config/tokenizer files.
    """
    from safetensors.torch import save_file

    started = time.perf_counter()
    tensors, skipped, from_folder = _load_source(source, trust_pickle, progress)
    saved, aliases = dedupe_shared(tensors)
    shards = plan_shards(saved, shard_size_bytes)
    metadata = {"format": "pt", "lmforge.source": source.name, **aliases}
    single_file = destination.suffix == ".safetensors"
    if single_file and len(shards) > 1:
        raise UserInputError(
            f"the weights need {len(shards)} shards at this --max-shard-size; "
            f"give a folder as DST (not {destination.name}) to write shards with an index"
        )

    copied: list[str] = []
    with progress_bar("writing safetensors", len(shards), progress) as advance:
        if single_file:
            with atomic_path(destination) as temporary:
                save_file(saved, str(temporary), metadata=metadata)
                _verify([temporary], saved, aliases)
            written = [destination]
            advance()
        else:
            with atomic_directory(destination) as folder:
                names = (
                    ["model.safetensors"]
                    if len(shards) == 1
                    else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
                )
                for name, shard in zip(names, shards, strict=True):
                    save_file({key: saved[key] for key in shard}, str(folder / name), metadata=metadata)
                    advance()
                if len(shards) > 1:
                    total_size = sum(t.numel() * t.element_size() for t in saved.values())
                    weight_map = {key: name for name, shard in zip(names, shards, strict=True) for key in shard}
                    atomic_write_json(
                        folder / SAFETENSORS_INDEX,
                        {"metadata": {"total_size": total_size, **metadata}, "weight_map": weight_map},
                    )
                if from_folder:
                    copied = copy_side_files(source, folder)
                _verify([folder / name for name in names], saved, aliases)
            written = [destination / name for name in names]
            if len(shards) > 1:
                written.append(destination / SAFETENSORS_INDEX)
    return ConvertReport(
        source=str(source),
        destination=str(destination),
        to="safetensors",
        quant=None,
        files=[str(path) for path in written],
        tensor_count=len(saved),
        params=sum(t.numel() for t in saved.values()),
        size_bytes=sum(path.stat().st_size for path in written),
        seconds=time.perf_counter() - started,
        verified=True,
        checks={"tensors_compared": len(saved), "shards": len(shards)},
        aliases=aliases,
        skipped=skipped,
        copied=copied,
    )
