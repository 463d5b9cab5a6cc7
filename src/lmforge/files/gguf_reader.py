"""A strict, header-only GGUF (v2/v3) reader.

GGUF keeps its key/values and tensor table at the front of the file; this reader walks them through
a read-only memory map and never touches the tensor data, so inspecting a 100 GB file costs the
same as a 1 MB one. Every length and count is checked against the bytes that remain before it is
used (the checks of llama.cpp's gguf.cpp), so hostile input raises FormatError instead of crashing,
hanging or allocating. Layout reference: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import FormatError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME_BYTES = 63  # GGML_MAX_NAME is 64 including the terminating NUL
MAX_KEY_BYTES = 65_535
MAX_ARRAY_NESTING = 8
ARRAY_PREVIEW_ITEMS = 8  # arrays longer than this (tokenizer vocabularies) are summarised

# GGUF value types (gguf.md "gguf_metadata_value_type"): struct format of the fixed-size ones.
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
VALUE_TYPE_NAMES = {
    0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32",
    7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64",
}  # fmt: skip


def quant_block_sizes() -> dict[int, tuple[str, int, int]]:
    """ggml type id → (name, elements per block, bytes per block), from the gguf package's table."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return {t.value: (t.name, *GGML_QUANT_SIZES[t]) for t in GGMLQuantizationType if t in GGML_QUANT_SIZES}


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array: its element type, length and first few items (a vocabulary has 150k)."""

    item_type: str
    length: int
    preview: list[Any]


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    ggml_type: str  # F32, F16, Q8_0, Q4_K ...
    shape: tuple[int, ...]  # as GGUF stores it: fastest-varying dimension first
    data_offset_byte: int  # relative to the start of the data region
    size_bytes: int
    bits_per_weight: float

    @property
    def num_params(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFHeader:
    path: Path
    version: int
    file_size_bytes: int
    alignment: int
    data_start_byte: int
    metadata: dict[str, Any]  # scalars and strings as values, long arrays as ArraySummary
    tensors: list[GGUFTensorInfo] = field(default_factory=list)


class _Cursor:
    """Bounds-checked little-endian reads from a buffer."""

    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer
        self.position = 0

    @property
    def remaining(self) -> int:
        return len(self.buffer) - self.position

    def need(self, size: int, what: str) -> None:
        if size > self.remaining:
            raise FormatError(f"{what} needs {size} bytes at offset {self.position} but the file ends first")

    def unpack(self, fmt: str, size: int, what: str) -> Any:
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buffer, self.position)
        self.position += size
        return value

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def raw_string(self, what: str, limit: int) -> bytes:
        length = self.u64(f"length of {what}")
        if length > limit:
            raise FormatError(
                f"{what} at offset {self.position - 8} is {length} bytes long, over the {limit}-byte limit"
            )
        self.need(length, what)
        data = bytes(self.buffer[self.position : self.position + length])
        self.position += length
        return data

    def skip_strings(self, count: int, what: str) -> None:
        """Skip `count` length-prefixed strings (a 150k-token vocabulary) in one tight loop."""
        unpack, buffer, end, position = _U64.unpack_from, self.buffer, len(self.buffer), self.position
        for _ in range(count):
            if position + 8 > end:
                break
            position += 8 + unpack(buffer, position)[0]
        else:
            if position <= end:
                self.position = position
                return
        raise FormatError(f"{what}: its strings run past the end of the file")


def _decode_name(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{what} {data[:32]!r} is not valid UTF-8") from None


def _read_value(cursor: _Cursor, value_type: int, key: str, depth: int = 0) -> Any:
    if value_type in _SCALAR_FORMATS:
        fmt = _SCALAR_FORMATS[value_type]
        return cursor.unpack(fmt, struct.calcsize(fmt), f"value of {key!r}")
    if value_type == _STRING:
        return cursor.raw_string(f"value of {key!r}", cursor.remaining).decode("utf-8", errors="replace")
    if value_type != _ARRAY:
        raise FormatError(f"key {key!r} has unknown value type {value_type} (known: 0-12)")
    if depth >= MAX_ARRAY_NESTING:
        raise FormatError(f"key {key!r} nests arrays more than {MAX_ARRAY_NESTING} deep")
    item_type = cursor.u32(f"array type of {key!r}")
    length = cursor.u64(f"array length of {key!r}")
    if item_type in _SCALAR_FORMATS:
        item_size = struct.calcsize(_SCALAR_FORMATS[item_type])
        cursor.need(length * item_size, f"array {key!r} of {length} {VALUE_TYPE_NAMES[item_type]}")
        shown = min(length, ARRAY_PREVIEW_ITEMS)
        preview = list(struct.unpack_from(f"<{shown}{_SCALAR_FORMATS[item_type][1]}", cursor.buffer, cursor.position))
        cursor.position += length * item_size
    elif item_type in (_STRING, _ARRAY):
        # Each item takes at least 8 bytes (a string length or an array header), checked before looping.
        cursor.need(length * 8, f"array {key!r} of {length} items")
        preview = []
        for index in range(length if item_type == _ARRAY else min(length, ARRAY_PREVIEW_ITEMS)):
            item = _read_value(cursor, item_type, f"{key}[{index}]", depth + 1)
            if index < ARRAY_PREVIEW_ITEMS:
                preview.append(item)
        if item_type == _STRING and length > ARRAY_PREVIEW_ITEMS:
            cursor.skip_strings(length - ARRAY_PREVIEW_ITEMS, f"array {key!r}")
    else:
        raise FormatError(f"array {key!r} has unknown item type {item_type} (known: 0-12)")
    if length <= ARRAY_PREVIEW_ITEMS:
        return preview
    return ArraySummary(VALUE_TYPE_NAMES[item_type], length, preview)


def _read_tensor_info(cursor: _Cursor, quant_types: dict[int, tuple[str, int, int]]) -> GGUFTensorInfo:
    name = _decode_name(cursor.raw_string("tensor name", MAX_TENSOR_NAME_BYTES), "tensor name")
    n_dims = cursor.u32(f"dimension count of tensor {name!r}")
    if n_dims > MAX_DIMS:
        raise FormatError(f"tensor {name!r} has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}")
    shape = tuple(cursor.u64(f"dimension of tensor {name!r}") for _ in range(n_dims))
    type_id = cursor.u32(f"type of tensor {name!r}")
    offset = cursor.u64(f"data offset of tensor {name!r}")
    if type_id not in quant_types:
        raise FormatError(f"tensor {name!r} has unknown ggml quant type {type_id}; this gguf release does not know it")
    type_name, block_elements, block_bytes = quant_types[type_id]
    elements = 1
    for dim in shape:
        elements *= dim
        if elements >= 2**63:  # llama.cpp checks the product against INT64_MAX
            raise FormatError(f"tensor {name!r}: the product of shape {list(shape)} overflows 64 bits")
    if shape and shape[0] % block_elements:
        raise FormatError(
            f"tensor {name!r}: first dimension {shape[0]} is not a multiple of the {type_name} block size {block_elements}"
        )
    size_bytes = elements // block_elements * block_bytes
    return GGUFTensorInfo(name, type_name, shape, offset, size_bytes, block_bytes * 8 / block_elements)


def _parse(buffer: memoryview, path: Path) -> GGUFHeader:
    file_size = len(buffer)
    cursor = _Cursor(buffer)
    cursor.need(4, "GGUF magic")
    magic = bytes(buffer[:4])
    if magic != GGUF_MAGIC:
        raise FormatError(f"bad magic {magic!r}: not a GGUF file (expected b'GGUF')")
    cursor.position = 4
    version = cursor.u32("GGUF version")
    if version == 1:
        raise FormatError("GGUF version 1 is obsolete and not supported; re-convert the model with a current llama.cpp")
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (2, 3):
            raise FormatError(f"big-endian GGUF (version {swapped}) is not supported")
        raise FormatError(f"unsupported GGUF version {version} (supported: 2, 3)")
    tensor_count = cursor.u64("tensor count")
    kv_count = cursor.u64("key/value count")
    # Smallest possible entries: key/value = 8-byte key length + 4-byte type + 1-byte value;
    # tensor info = 8-byte name length + 4-byte dims + 4-byte type + 8-byte offset.
    if kv_count * 13 + tensor_count * 24 > cursor.remaining:
        raise FormatError(
            f"header claims {tensor_count} tensors and {kv_count} key/values, more than the {file_size}-byte file holds"
        )
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = _decode_name(cursor.raw_string("metadata key", MAX_KEY_BYTES), "metadata key")
        if key in metadata:
            raise FormatError(f"duplicate metadata key {key!r}")
        value_type = cursor.u32(f"value type of {key!r}")
        metadata[key] = _read_value(cursor, value_type, key)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise FormatError(f"general.alignment must be a positive power of two, got {alignment!r}")
    quant_types = quant_block_sizes()
    tensors: list[GGUFTensorInfo] = []
    names: set[str] = set()
    for _ in range(tensor_count):
        info = _read_tensor_info(cursor, quant_types)
        if info.name in names:
            raise FormatError(f"duplicate tensor name {info.name!r}")
        names.add(info.name)
        tensors.append(info)
    data_start = -(-cursor.position // alignment) * alignment
    data_size = file_size - data_start
    for info in tensors:
        if info.data_offset_byte % alignment:
            raise FormatError(
                f"tensor {info.name!r}: data offset {info.data_offset_byte} is not aligned to {alignment}"
            )
        if info.data_offset_byte + info.size_bytes > data_size:
            raise FormatError(
                f"tensor {info.name!r}: data [{info.data_offset_byte}, {info.data_offset_byte + info.size_bytes}) "
                f"runs past the end of the file's {max(data_size, 0)}-byte data region (truncated file?)"
            )
    end = 0
    for info in sorted(tensors, key=lambda t: t.data_offset_byte):
        if info.data_offset_byte < end:
            raise FormatError(f"tensor {info.name!r}: data overlaps the previous tensor's")
        end = info.data_offset_byte + info.size_bytes
    return GGUFHeader(path, version, file_size, alignment, data_start, metadata, tensors)


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read and validate a GGUF file's key/values and tensor table; tensor data is never read."""
    path = Path(path)
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < 24:
            raise FormatError(f"{path.name}: file is {size} bytes, shorter than a GGUF header (24 bytes)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                return _parse(view, path)
            except FormatError as error:
                raise FormatError(f"{path.name}: {error}") from None
            finally:
                view.release()
