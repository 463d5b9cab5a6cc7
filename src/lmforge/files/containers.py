"""Containers that can hold pickle streams: zip (torch checkpoints, .npz), tar (oldest torch
format), gzip/bz2/xz wrappers, NumPy .npy headers; and magic-byte sniffing of everything else.

The zip reader parses the central directory itself so that it is at least as permissive as
torch's own reader (miniz in caffe2/serialize/inline_container.cc): it ignores CRCs and flag
bits, trusts the central directory over a local header whose name differs, tolerates junk
before the archive, and understands ZIP64. A member it cannot read is reported, never skipped.
"""

from __future__ import annotations

import ast
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_MAX_DECOMPRESSED_BYTES = 1 << 30  # 1 GiB: decompression past this is refused, not OOM

_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_CENTRAL = b"PK\x01\x02"
_ZIP_END = b"PK\x05\x06"
_ZIP64_END = b"PK\x06\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_NPY_MAGIC = b"\x93NUMPY"


_COPY_LIMIT_BYTES = 16 << 20  # stored members larger than this are viewed in place, not copied


class Window:
    """A zero-copy view of `data[start:end]` (bytes or mmap) with the few methods the scanners use.

    Slicing an mmap copies; a multi-GB stored tensor member must not be copied just to sniff it.
    """

    def __init__(self, data, start: int, end: int) -> None:
        self.data, self.start, self.end = data, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def _bound(self, index: int | None, default: int) -> int:
        if index is None:
            return default
        if index < 0:
            index += len(self)
        return self.start + min(max(index, 0), len(self))

    def __getitem__(self, key):
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise ValueError("Window supports contiguous slices only")
            return self.data[self._bound(key.start, self.start) : self._bound(key.stop, self.end)]
        if not -len(self) <= key < len(self):
            raise IndexError("Window index out of range")
        return self.data[self._bound(key, self.start)]

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        found = self.data.find(sub, self._bound(start, self.start), self._bound(end, self.end))
        return found - self.start if found >= 0 else -1

    def rfind(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        found = self.data.rfind(sub, self._bound(start, self.start), self._bound(end, self.end))
        return found - self.start if found >= 0 else -1


@dataclass(frozen=True)
class ZipMember:
    """A zip entry as the central directory describes it; `problem` says why it cannot be read."""

    name: str
    data_offset: int  # where the (possibly compressed) bytes start in the archive
    compressed_size_bytes: int
    size_bytes: int
    method: int  # 0 stored, 8 deflate, 12 bzip2, 14 lzma
    problem: str | None = None


class ContainerError(Exception):
    """Raised by the readers here; scan.py turns it into a finding on the file or member."""


def detect_kind(head: bytes, size_bytes: int) -> str:
    """The container or format a file's first bytes announce (never its name).

    Returns one of: zip, gzip, bz2, xz, 7z, zstd, npy, safetensors, gguf, tar, pickle, unknown.
    """
    if head.startswith(_ZIP_LOCAL) or head.startswith(_ZIP_END):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and len(head) > 3 and head[3:4].isdigit():
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(b"GGUF"):
        return "gguf"
    if len(head) >= 9 and head[8:9] == b"{":
        # safetensors: u64 little-endian header length, then a JSON object (safetensors format spec).
        (header_bytes,) = struct.unpack("<Q", head[:8])
        if 2 <= header_bytes <= size_bytes - 8:
            return "safetensors"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return "pickle"
    return "unknown"


def looks_like_onnx(head: bytes) -> bool:
    # ONNX ModelProto starts with field 1 (ir_version, varint): tag byte 0x08, a small version.
    return len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= 30


# ---- zip -----------------------------------------------------------------------------------------
def _end_record_candidates(data, size: int) -> list[int]:
    """Every end-of-central-directory signature in the last 64 KiB, last first.

    Readers differ on which one they trust when the archive comment holds a fake one, so the
    scanner reads them all and scans the union of their members.
    """
    search_from = max(0, size - (22 + 0xFFFF))
    candidates, end = [], size
    while True:
        position = data.rfind(_ZIP_END, search_from, end)
        if position < 0:
            return candidates
        if position + 22 <= size:
            candidates.append(position)
        end = position + 3


def _zip64_end(data, end_position: int) -> tuple[int, int]:
    """(entries, central directory offset) from the ZIP64 end record (APPNOTE.TXT 4.3.14-4.3.15)."""
    locator = end_position - 20
    if locator < 0 or data[locator : locator + 4] != _ZIP64_LOCATOR:
        raise ContainerError("zip64 sizes without a zip64 end-of-central-directory locator")
    (record_offset,) = struct.unpack("<Q", data[locator + 8 : locator + 16])
    if data[record_offset : record_offset + 4] != _ZIP64_END:
        raise ContainerError("zip64 end-of-central-directory record missing")
    entries, _size, offset = struct.unpack("<QQQ", data[record_offset + 32 : record_offset + 56])
    return entries, offset


def _zip64_extra(extra: bytes, sizes: list[int]) -> list[int]:
    """Replaces the 0xFFFFFFFF placeholders in [size, compressed, offset] from the zip64 extra field."""
    position = 0
    while position + 4 <= len(extra):
        header_id, length = struct.unpack("<HH", extra[position : position + 4])
        body = extra[position + 4 : position + 4 + length]
        if header_id == 0x0001:
            values = list(sizes)
            cursor = 0
            for index, value in enumerate(values):
                if value == 0xFFFFFFFF and cursor + 8 <= len(body):
                    (values[index],) = struct.unpack("<Q", body[cursor : cursor + 8])
                    cursor += 8
            return values
        position += 4 + length
    return sizes


def read_zip_members(data, size: int | None = None) -> list[ZipMember]:
    """Every entry of the zip in `data` (bytes, mmap or Window), from its central directory(ies).

    Falls back to walking local headers when there is no central directory (a truncated archive).
    """
    size = len(data) if size is None else size
    members: dict[tuple[str, int], ZipMember] = {}
    errors = []
    for end in _end_record_candidates(data, size):
        try:
            for member in _read_central_directory(data, size, end):
                members.setdefault((member.name, member.data_offset), member)
        except (ContainerError, struct.error) as error:
            errors.append(str(error))
    if members:
        return list(members.values())
    if data[0:4] == _ZIP_LOCAL:
        return _walk_local_headers(data, size)
    raise ContainerError(errors[0] if errors else "zip end-of-central-directory record not found")


def _read_central_directory(data, size: int, end: int) -> list[ZipMember]:
    entries, directory_size, directory_offset = struct.unpack("<HII", data[end + 10 : end + 20])
    entries_total = entries
    if entries == 0xFFFF or directory_offset == 0xFFFFFFFF or directory_size == 0xFFFFFFFF:
        entries_total, directory_offset = _zip64_end(data, end)
        zip64_record = data.rfind(_ZIP64_END, 0, end)
        directory_end = zip64_record if zip64_record >= 0 else end
    else:
        directory_end = end
    # Junk prepended to the archive shifts every offset (zipfile's `concat`, Lib/zipfile.py _RealGetContents).
    shift = max(0, directory_end - directory_size - directory_offset) if directory_size else 0
    if data[directory_offset + shift : directory_offset + shift + 4] != _ZIP_CENTRAL and entries_total:
        shift = 0
        if data[directory_offset : directory_offset + 4] != _ZIP_CENTRAL:
            raise ContainerError(f"zip central directory not found at byte {directory_offset}")

    members: list[ZipMember] = []
    position = directory_offset + shift
    for _ in range(min(entries_total, size // 46 + 1)):
        if position + 46 > size or data[position : position + 4] != _ZIP_CENTRAL:
            problem = f"central directory entry {len(members)} is corrupt at byte {position}"
            members.append(ZipMember("<central directory>", 0, 0, 0, 0, problem))
            break
        fields = struct.unpack("<4s6H3I5H2I", data[position : position + 46])
        flags, method = fields[3], fields[4]
        compressed, uncompressed = fields[8], fields[9]
        name_length, extra_length, comment_length = fields[10], fields[11], fields[12]
        local_offset = fields[16]
        raw_name = bytes(data[position + 46 : position + 46 + name_length])
        extra = bytes(data[position + 46 + name_length : position + 46 + name_length + extra_length])
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        uncompressed, compressed, local_offset = _zip64_extra(extra, [uncompressed, compressed, local_offset])
        members.append(_locate_member(data, size, name, local_offset + shift, compressed, uncompressed, method, flags))
        position += 46 + name_length + extra_length + comment_length
    return members


def _locate_member(data, size: int, name: str, local_offset: int, compressed: int, uncompressed: int,
                   method: int, flags: int) -> ZipMember:
    problem = None
    data_offset = local_offset
    if local_offset + 30 > size or data[local_offset : local_offset + 4] != _ZIP_LOCAL:
        problem = f"local header missing at byte {local_offset}"
    else:
        local_name_length, local_extra_length = struct.unpack("<HH", data[local_offset + 26 : local_offset + 30])
        data_offset = local_offset + 30 + local_name_length + local_extra_length
        if flags & 0x1:
            problem = "member is encrypted"
        elif data_offset + compressed > size:
            problem = f"member data runs past the end of the archive ({data_offset + compressed} > {size} bytes)"
        elif method not in (0, 8, 12, 14):
            problem = f"unsupported zip compression method {method}"
    return ZipMember(name, data_offset, compressed, uncompressed, method, problem)


def _walk_local_headers(data, size: int) -> list[ZipMember]:
    if data[0:4] != _ZIP_LOCAL:
        raise ContainerError("not a zip archive")
    members: list[ZipMember] = []
    position = 0
    while data[position : position + 4] == _ZIP_LOCAL and position + 30 <= size:
        fields = struct.unpack("<4s5H3I2H", data[position : position + 30])
        flags, method, compressed, uncompressed = fields[2], fields[3], fields[7], fields[8]
        name_length = fields[9]
        name = bytes(data[position + 30 : position + 30 + name_length]).decode("utf-8", "replace")
        member = _locate_member(data, size, name, position, compressed, uncompressed, method, flags)
        if flags & 0x8 and compressed == 0:
            members.append(ZipMember(name, member.data_offset, 0, 0, method,
                                     "no central directory and sizes deferred to a data descriptor"))
            break
        members.append(member)
        position = member.data_offset + compressed
    members.append(ZipMember("<central directory>", 0, 0, 0, 0, "zip has no central directory (truncated archive?)"))
    return members


def read_zip_member(data, member: ZipMember, max_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES):
    """The member's uncompressed bytes (a zero-copy Window over `data` when stored and large)."""
    if member.problem:
        raise ContainerError(member.problem)
    if member.method == 0 and member.compressed_size_bytes > _COPY_LIMIT_BYTES:
        return Window(data, member.data_offset, member.data_offset + member.compressed_size_bytes)
    raw = data[member.data_offset : member.data_offset + member.compressed_size_bytes]
    if member.method == 0:
        return raw
    if member.method == 8:
        return _inflate(lambda: zlib.decompressobj(-15), raw, max_bytes)
    if member.method == 12:
        import bz2

        return _inflate(bz2.BZ2Decompressor, raw, max_bytes)
    import lzma

    # zip's LZMA members carry a 4-byte version/size prefix before the properties (APPNOTE.TXT 5.8.8).
    properties_length = struct.unpack("<H", raw[2:4])[0] if len(raw) >= 4 else 0
    filters = [lzma._decode_filter_properties(lzma.FILTER_LZMA1, raw[4 : 4 + properties_length])]
    return _inflate(lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters), raw[4 + properties_length :], max_bytes)


_CHUNK_BYTES = 1 << 20


def _inflate(make_decompressor, raw, max_bytes: int, multi_member: bool = False) -> bytes:
    """Decompresses `raw` chunk by chunk, never holding more than `max_bytes` (+1) of output.

    `multi_member`: gzip/bz2/xz files may be several streams back to back (zero padding between
    allowed), and gzip.open reads them all as one, so a payload in a second member is found too.
    """
    out = bytearray()
    decompressor = make_decompressor()
    position, pending, between_members = 0, b"", False
    try:
        while True:
            if not pending:
                if position >= len(raw):
                    break
                pending = bytes(raw[position : position + _CHUNK_BYTES])
                position += len(pending)
            if between_members:
                pending = pending.lstrip(b"\x00")
                if not pending:
                    continue
                decompressor, between_members = make_decompressor(), False
            out += decompressor.decompress(pending, max_bytes + 1 - len(out))
            pending = getattr(decompressor, "unconsumed_tail", b"")  # zlib keeps input it had no room for
            while not hasattr(decompressor, "unconsumed_tail") and not decompressor.eof and not decompressor.needs_input:
                if len(out) > max_bytes:
                    break
                out += decompressor.decompress(b"", max_bytes + 1 - len(out))  # bz2/lzma drain their buffer
            if len(out) > max_bytes:
                raise ContainerError(f"decompresses to more than {max_bytes} bytes; refusing to inflate further")
            if decompressor.eof:
                if not multi_member:
                    return bytes(out)
                pending, between_members = decompressor.unused_data + pending, True
    except (zlib.error, OSError, EOFError, ValueError) as error:
        raise ContainerError(f"cannot decompress: {error}") from error
    if not between_members:
        raise ContainerError("compressed data is truncated")
    return bytes(out)


def decompress_stream(kind: str, data, max_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> bytes:
    """gzip / bz2 / xz payload, capped at `max_bytes` (a decompression bomb is an error, not an OOM)."""
    import bz2
    import lzma

    makers = {
        "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
        "bz2": bz2.BZ2Decompressor,
        "xz": lzma.LZMADecompressor,
    }
    return _inflate(makers[kind], data, max_bytes, multi_member=True)


# ---- tar ---------------------------------------------------------------------------------------
class _Reader(io.RawIOBase):
    """A read-only file over bytes, mmap or Window, so tarfile never needs a copy of the archive."""

    def __init__(self, data) -> None:
        self.data, self.position = data, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: len(self.data)}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        chunk = self.data[self.position : self.position + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.position += len(chunk)
        return len(chunk)


def read_tar_members(data, max_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(name, bytes or None, problem) for each regular file of a tar, one at a time.

    torch's pre-1.0 format was a tar of pickles; the archive itself is never copied.
    """
    import tarfile

    try:
        with tarfile.open(fileobj=_Reader(data), mode="r:") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                if info.size > max_bytes:
                    yield info.name, None, f"member larger than {max_bytes} bytes"
                    continue
                handle = archive.extractfile(info)
                yield info.name, (handle.read() if handle else None), (None if handle else "unreadable")
    except (tarfile.TarError, OSError, EOFError) as error:
        yield "<tar>", None, f"corrupt tar: {error}"


# ---- npy ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NpyHeader:
    descr: object
    data_offset: int
    has_objects: bool  # object dtype: the payload after the header is a pickle stream


def read_npy_header(data) -> NpyHeader:
    """Parses the .npy header (NEP 1 format: magic, version, little-endian length, a Python dict literal)."""
    if len(data) < 10 or data[:6] != _NPY_MAGIC:
        raise ContainerError("not a .npy file")
    major = data[6]
    if major == 1:
        (length,) = struct.unpack("<H", data[8:10])
        start = 10
    elif major in (2, 3):
        (length,) = struct.unpack("<I", data[8:12])
        start = 12
    else:
        raise ContainerError(f"unknown .npy format version {major}")
    if start + length > len(data):
        raise ContainerError(".npy header runs past the end of the file")
    text = bytes(data[start : start + length]).decode("utf-8" if major == 3 else "latin-1", "replace")
    try:
        header = _literal(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        raise ContainerError(f".npy header is not a dict literal: {error}") from error
    if not isinstance(header, dict) or "descr" not in header:
        raise ContainerError(".npy header has no 'descr'")
    return NpyHeader(header["descr"], start + length, _has_objects(header["descr"]))


def _literal(text: str) -> object:
    """numpy parses the header with ast.literal_eval, after dropping Python 2's `L` long suffixes
    (numpy/lib/format.py `_filter_header`), so files written by Python 2 numpy still load."""
    import re

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return ast.literal_eval(re.sub(r"(?<=\d)L\b", "", text))


def _has_objects(descr: object) -> bool:
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):  # structured dtype: [(name, dtype[, shape]), ...]
        return any(not isinstance(field, tuple) or len(field) < 2 or _has_objects(field[1]) for field in descr)
    return True  # an unexpected descr shape: assume numpy may fall back to pickle
