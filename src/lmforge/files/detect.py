"""Format detection by bytes, never by file name.

A `.bin` can be a torch zip, a legacy torch pickle or raw weights; a renamed safetensors file is
still safetensors. Detection reads at most a few kilobytes (and a zip's central directory), so it
is instant on any size.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Literal

from lmforge.errors import FormatError, NotFoundError, UserInputError

Format = Literal[
    "safetensors",
    "safetensors-sharded",  # a model.safetensors.index.json and the shards it names
    "gguf",
    "torch-zip",  # torch.save since 1.6 (.bin/.pt/.pth): zip with <any folder>/data.pkl
    "torchscript",  # torch.jit.save: zip with code/ and constants.pkl
    "torch-legacy",  # torch.save before 1.6: concatenated pickles starting with torch's magic number
    "pickle",
    "npy",
    "npz",
    "onnx",
    "hf-model-dir",  # config.json + weights (+ tokenizer, generation config)
    "peft-adapter-dir",  # adapter_config.json + adapter weights
    "zip",  # a zip that is none of the above
    "gzip",
    "7z",
    "hdf5",
]

SAFETENSORS_INDEX = "model.safetensors.index.json"
_SNIFF_BYTES = 64
# torch/serialization.py MAGIC_NUMBER, pickled as protocol-2 LONG1 right after PROTO 2.
_TORCH_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
# ModelProto field tags that may follow ir_version (onnx.proto field numbers 2-8, 14, 20, 25).
_ONNX_SECOND_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA}
_PICKLE_V0_STARTS = set(b"(]}c)NIJKLSVX")


def describe_bytes(head: bytes) -> str:
    """What the first bytes look like, for an error a user can act on."""
    if not head:
        return "the file is empty"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights: run `git lfs pull`"
    shown = head[:16]
    if all(32 <= b < 127 or b in b"\t\r\n" for b in shown):
        text = shown.decode("ascii").strip()
        looks = "JSON" if text[:1] in "{[" else "HTML" if text.lower().startswith("<") else "text"
        return f"it starts with {looks} {text!r}"
    return f"its first bytes are {shown.hex(' ')}"


def _sniff_safetensors(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    (header_size,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 2 <= header_size <= file_size - 8


def _sniff_onnx(head: bytes) -> bool:
    if len(head) < 3 or head[0] != 0x08:
        return False
    position = 1  # skip the ir_version varint (small in practice: 3..12)
    while position < len(head) and head[position] & 0x80:
        position += 1
    return position < 4 and position + 1 < len(head) and head[position + 1] in _ONNX_SECOND_TAGS


def _classify_zip(path: Path) -> Format:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "zip"  # a damaged central directory: the scanner still reads it member by member
    basenames = {name.rsplit("/", 1)[-1] for name in names}
    if "constants.pkl" in basenames and any("/code/" in f"/{name}" for name in names):
        return "torchscript"
    if "data.pkl" in basenames:
        return "torch-zip"
    if names and all(name.endswith(".npy") for name in names):
        return "npz"
    return "zip"


def _detect_directory(path: Path) -> Format:
    if (path / "adapter_config.json").is_file():
        return "peft-adapter-dir"
    if (path / "config.json").is_file():
        return "hf-model-dir"
    if (path / SAFETENSORS_INDEX).is_file():
        return "safetensors-sharded"
    raise FormatError(
        f"{path} is a folder without config.json, adapter_config.json or {SAFETENSORS_INDEX}; "
        "point at a model file inside it"
    )


def detect_format(path: str | os.PathLike[str]) -> Format:
    """The format of a file or model folder, decided by its bytes."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    if path.is_dir():
        return _detect_directory(path)
    file_size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
            tail = b""
            if file_size > 0:
                handle.seek(file_size - 1)
                tail = handle.read(1)
    except PermissionError:
        raise UserInputError(f"{path}: permission denied; lmforge cannot read it") from None
    if head.startswith(b"GGUF"):
        return "gguf"
    if _sniff_safetensors(head, file_size):
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _classify_zip(path)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(_TORCH_LEGACY_PREFIX):
        return "torch-legacy"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.lstrip()[:1] == b"{" and path.name.endswith(".json"):
        try:
            document = json.loads(path.read_text(encoding="utf-8")) if file_size < 50_000_000 else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            document = {}
        if isinstance(document, dict) and isinstance(document.get("weight_map"), dict):
            return "safetensors-sharded"
    if _sniff_onnx(head):
        return "onnx"
    # Protocol 0/1 pickles have no PROTO opcode: a known first opcode and a STOP ('.') at the end.
    if head[:1] and head[0] in _PICKLE_V0_STARTS and tail == b".":
        return "pickle"
    from lmforge.files.safetensors_reader import truncated_header

    if (truncated := truncated_header(head, file_size)) is not None:
        raise FormatError(f"{path.name}: {truncated}")
    raise FormatError(f"{path.name}: unrecognised model file format: {describe_bytes(head)}")
