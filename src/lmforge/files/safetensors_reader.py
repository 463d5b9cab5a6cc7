"""A strict, header-only safetensors reader.

Reads the 8-byte length and the JSON header, never the tensor data, so a 100 GB file is read in
microseconds. It enforces every check the reference implementation (safetensors' Rust
`SafeTensors::read_metadata` and `Metadata::validate`) enforces, and raises FormatError naming the
problem, so hostile or truncated files never crash, hang or allocate more than the header.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import FormatError

# Same cap as the reference implementation (safetensors/src/tensor.rs MAX_HEADER_SIZE).
MAX_HEADER_BYTES = 100_000_000

# Bits per element of every dtype safetensors 0.8 knows (safetensors/src/tensor.rs Dtype::bitsize).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

_USIZE_MAX = 2**64 - 1  # the reference computes sizes in usize and reports overflow


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as recorded in a header: enough to count and size it without reading its data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data_start_byte: int  # offset inside the data region (after the header)
    data_end_byte: int

    @property
    def num_params(self) -> int:
        return math.prod(self.shape)

    @property
    def size_bytes(self) -> int:
        return self.data_end_byte - self.data_start_byte


@dataclass
class SafetensorsHeader:
    path: Path
    file_size_bytes: int
    header_size_bytes: int
    tensors: list[TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise FormatError(f"duplicate key {key!r} in the header")
        result[key] = value
    return result


def _parse_tensor(name: str, entry: object) -> TensorInfo:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(f"tensor {name!r} must have exactly the keys dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise FormatError(f"tensor {name!r} has unknown dtype {dtype!r} (known: {', '.join(DTYPE_BITS)})")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= _USIZE_MAX for d in shape):
        raise FormatError(f"tensor {name!r} has an invalid shape {shape!r}: a list of non-negative integers expected")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and 0 <= o <= _USIZE_MAX for o in offsets)
    ):
        raise FormatError(f"tensor {name!r} has invalid data_offsets {offsets!r}: [begin, end] expected")
    return TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])


def _validate_layout(tensors: list[TensorInfo]) -> int:
    """Offsets must tile the data region exactly; returns the data region's length."""
    expected_start = 0
    for info in sorted(tensors, key=lambda t: (t.data_start_byte, t.data_end_byte)):
        if info.data_end_byte < info.data_start_byte:
            raise FormatError(
                f"tensor {info.name!r}: data_offsets end {info.data_end_byte} is before start {info.data_start_byte}"
            )
        if info.data_start_byte != expected_start:
            kind = "overlaps the previous tensor" if info.data_start_byte < expected_start else "leaves a gap"
            raise FormatError(
                f"tensor {info.name!r}: data_offsets are not contiguous (starts at {info.data_start_byte}, "
                f"expected {expected_start}; it {kind})"
            )
        expected_start = info.data_end_byte
        elements = 1
        for dim in info.shape:  # checked product, as the reference does, so huge shapes stay cheap
            elements *= dim
            if elements > _USIZE_MAX:
                raise FormatError(
                    f"tensor {info.name!r}: the product of shape {list(info.shape)[:8]} overflows 64 bits"
                )
        bits = elements * DTYPE_BITS[info.dtype]
        if bits > _USIZE_MAX:
            raise FormatError(f"tensor {info.name!r}: shape {list(info.shape)} × {info.dtype} overflows 64 bits")
        if bits % 8:
            raise FormatError(
                f"tensor {info.name!r}: {elements} elements of {info.dtype} ({DTYPE_BITS[info.dtype]} bits) "
                "do not fill whole bytes"
            )
        if info.size_bytes != bits // 8:
            raise FormatError(
                f"tensor {info.name!r}: data_offsets span {info.size_bytes} bytes but shape {list(info.shape)} "
                f"× {info.dtype} needs {bits // 8}"
            )
    return expected_start


def parse_header_bytes(header: bytes) -> tuple[list[TensorInfo], dict[str, str]]:
    """Parse and check the JSON header (the bytes after the 8-byte length); layout is checked too."""
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FormatError(f"header is not valid UTF-8 (byte {error.start})") from None
    if not text.startswith("{"):
        raise FormatError("header does not start with '{': not a safetensors JSON header")
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicates)
    except (json.JSONDecodeError, RecursionError) as error:
        raise FormatError(f"header is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise FormatError("header must be a JSON object")
    metadata_raw = document.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict) or not all(isinstance(v, str) for v in metadata_raw.values()):
        raise FormatError("__metadata__ must be an object of string values")
    tensors = [_parse_tensor(name, entry) for name, entry in document.items()]
    _validate_layout(tensors)
    return tensors, dict(metadata_raw)


def truncated_header(head: bytes, file_size: int) -> str | None:
    """Why a file that begins like safetensors (a length within the limit, then '{') cannot be one: it ends
    inside its own header, as the first bytes of a cut-short download or copy do. None for any other file;
    format detection asks before it gives up, so the user hears "truncated", not "unrecognised"."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    (header_size,) = struct.unpack("<Q", head[:8])
    if not file_size - 8 < header_size <= MAX_HEADER_BYTES:
        return None
    return (
        f"truncated safetensors header ({file_size - 8} of {header_size} bytes): the file was cut short; "
        "download or copy it again"
    )


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate a safetensors file's header; the tensor data is never read."""
    path = Path(path)
    file_size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise FormatError(f"{path.name}: file is {file_size} bytes, shorter than the 8-byte header length")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > MAX_HEADER_BYTES:
            raise FormatError(
                f"{path.name}: header length {header_size} bytes is over the {MAX_HEADER_BYTES}-byte limit"
            )
        if header_size + 8 > file_size:
            raise FormatError(
                f"{path.name}: header length {header_size} bytes runs past the end of the {file_size}-byte file"
            )
        header = handle.read(header_size)
    if len(header) != header_size:
        raise FormatError(f"{path.name}: file changed while reading its header")
    try:
        tensors, metadata = parse_header_bytes(header)
    except FormatError as error:
        raise FormatError(f"{path.name}: {error}") from None
    data_size = sum(t.size_bytes for t in tensors)
    if 8 + header_size + data_size != file_size:
        raise FormatError(
            f"{path.name}: tensor data ends at byte {8 + header_size + data_size} but the file has {file_size} bytes "
            "(truncated or trailing data)"
        )
    return SafetensorsHeader(path, file_size, 8 + header_size, tensors, metadata)
