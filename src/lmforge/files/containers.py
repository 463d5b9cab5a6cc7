"""Containers that can hold pickle streams, each read with the reader its loader uses: tar (torch's
pre-1.0 format, read by tarfile as torch.load does), NumPy .npy headers (numpy's own header
reader), gzip/bz2/xz wrappers (joblib loads compressed pickles), and magic-byte detection.
Zip archives have their own module (zip_archive.py).
"""

from __future__ import annotations

import importlib
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_DECOMPRESSED_BYTES = 1 << 30  # 1 GiB: decompression past this is refused, not OOM
COPY_LIMIT_BYTES = 16 << 20  # members larger than this are viewed in place, not copied

_NPY_MAGIC = b"\x93NUMPY"


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


class ContainerError(Exception):
    """Raised by the readers here; scan.py turns it into a finding on the file or member."""


def detect_kind(head: bytes, size_bytes: int) -> str:
    """The container or format a file's first bytes announce (never its name).

    Returns one of: zip, gzip, bz2, xz, zlib, lzma, lz4, 7z, zstd, npy, safetensors, gguf, pickle,
    unknown. (A tar is whatever tarfile opens: is_tar. A zip may also start with other bytes:
    zip_archive.looks_like_zip.) zlib, lzma and lz4 are joblib's other compressors, which it
    recognises by these same prefixes (joblib/compressor.py) before unpickling what they hold.
    """
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
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
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:  # RFC 1950 header check
        return "zlib"
    if head.startswith(b"\x5d\x00\x00"):  # .lzma ("alone") properties byte and dictionary size
        return "lzma"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(b"GGUF"):
        return "gguf"
    if len(head) >= 9 and head[8:9] == b"{":
        # safetensors: u64 little-endian header length, then a JSON object (safetensors format spec).
        (header_bytes,) = struct.unpack("<Q", head[:8])
        if 2 <= header_bytes <= size_bytes - 8:
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return "pickle"
    return "unknown"


def looks_like_onnx(head: bytes) -> bool:
    # ONNX ModelProto starts with field 1 (ir_version, varint): tag byte 0x08, a small version.
    return len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= 30


_CHUNK_BYTES = 1 << 20


def inflate(make_decompressor, raw, max_bytes: int, multi_member: bool = False) -> tuple[bytes, str | None]:
    """Decompresses `raw` chunk by chunk, never holding more than `max_bytes` of output.

    Returns what decompressed and why it stopped early (None when it did not): a streaming loader
    (gzip.open, zipfile) hands the bytes before a corrupt or truncated point to the unpickler, so
    they are scanned too. `multi_member`: gzip/bz2/xz files may be several streams back to back
    (zero padding between allowed), and gzip.open reads them all as one.
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
            while (
                not hasattr(decompressor, "unconsumed_tail") and not decompressor.eof and not decompressor.needs_input
            ):
                if len(out) > max_bytes:
                    break
                out += decompressor.decompress(b"", max_bytes + 1 - len(out))  # bz2/lzma drain their buffer
            if len(out) > max_bytes:
                return bytes(
                    out[:max_bytes]
                ), f"decompresses to more than {max_bytes} bytes; refusing to inflate further"
            if decompressor.eof:
                if not multi_member:
                    return bytes(out), None
                pending, between_members = decompressor.unused_data + pending, True
    except (zlib.error, OSError, EOFError, ValueError) as error:
        return bytes(out), f"cannot decompress: {error}"
    return bytes(out), (None if between_members else "compressed data is truncated")


def decompress_stream(kind: str, data, max_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> tuple[bytes, str | None]:
    """gzip / bz2 / xz / zlib / lzma payload, capped at `max_bytes` (a decompression bomb is a
    problem, not an OOM), with the reason it stopped early, if it did."""
    import bz2
    import lzma

    makers = {
        "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
        "bz2": bz2.BZ2Decompressor,
        "xz": lzma.LZMADecompressor,
        "zlib": zlib.decompressobj,
        "lzma": lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE),
    }
    return inflate(makers[kind], data, max_bytes, multi_member=True)


# ---- tar ---------------------------------------------------------------------------------------
class BytesReader(io.RawIOBase):
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


@dataclass(frozen=True)
class TarMember:
    """One tar member as tarfile lists it; `body` None with a `problem` when it cannot be read."""

    name: str
    body: bytes | Window | None  # bytes or a Window over the archive
    problem: str | None = None


def is_tar(data) -> bool:
    """Whether tarfile opens `data` (torch.load tries exactly this on every file before unpickling it)."""
    import tarfile

    if len(data) < 512:
        return False
    try:
        with tarfile.open(fileobj=BytesReader(data), mode="r:"):
            return True
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return False


def read_tar_members(data, max_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> Iterator[TarMember]:
    """Every member of a tar as tarfile reads it, one at a time (the archive itself is never copied).

    A link, device or FIFO member is a problem: torch's legacy loader extracts members to a
    temporary folder and opens them by name, so a symlink named `storages` would make it read a
    file outside the archive, which no scan of the archive can see.
    """
    import tarfile

    try:
        with tarfile.open(fileobj=BytesReader(data), mode="r:") as archive:
            for info in archive:
                if info.isdir():
                    continue
                if not info.isreg():
                    kind = "link" if info.issym() or info.islnk() else "special file"
                    yield TarMember(
                        info.name, None, f"a {kind} member: what a loader reads through it is outside the archive"
                    )
                elif info.size > max_bytes:
                    yield TarMember(info.name, None, f"member larger than {max_bytes} bytes")
                elif info.size > COPY_LIMIT_BYTES and not info.sparse:
                    yield TarMember(info.name, Window(data, info.offset_data, info.offset_data + info.size))
                else:
                    handle = archive.extractfile(info)
                    yield TarMember(info.name, handle.read() if handle else None, None if handle else "unreadable")
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        yield TarMember("<tar>", None, f"corrupt tar: {error}")


# ---- npy ---------------------------------------------------------------------------------------
MAX_NPY_HEADER_BYTES = 16 << 20  # numpy.load(allow_pickle=True) has no header limit; we parse this much


@dataclass(frozen=True)
class NpyHeader:
    dtype: object  # numpy.dtype
    data_offset: int
    has_objects: bool  # object dtype (anywhere in it): numpy.load unpickles the bytes after the header


def read_npy_header(data) -> NpyHeader:
    """The .npy header exactly as numpy.load reads it (numpy.lib.format.read_array: read_magic,
    _check_version, _read_array_header), so `'descr': 'object'`, structured and sub-array dtypes
    are judged by numpy's own dtype, not by a look at the descr string."""
    import tokenize
    import warnings

    # numpy's own reader, private functions included (typed Any: numpy's stubs leave them out, and its home moved)
    numpy_format: Any
    try:
        numpy_format = importlib.import_module("numpy.lib._format_impl")  # numpy >= 2.3
    except ImportError:  # older numpy: the same API in its public module
        numpy_format = importlib.import_module("numpy.lib.format")

    handle = io.BytesIO(bytes(data[: min(len(data), 12 + MAX_NPY_HEADER_BYTES)]))
    try:
        version = numpy_format.read_magic(handle)
        numpy_format._check_version(version)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about headers written by Python 2
            _, _, dtype = numpy_format._read_array_header(handle, version, max_header_size=MAX_NPY_HEADER_BYTES)
    except (
        ValueError,
        TypeError,
        KeyError,
        OverflowError,
        SyntaxError,
        MemoryError,
        RecursionError,
        struct.error,
        tokenize.TokenError,
    ) as error:  # what numpy's header parser (ast, tokenize) raises on bad input
        raise ContainerError(f".npy header numpy cannot read: {str(error).splitlines()[0][:200]}") from error
    return NpyHeader(dtype, handle.tell(), bool(dtype.hasobject))
