"""Zip archives read the way their loaders read them, and refused where loaders could disagree.

Two programs unpickle members of a zip: Python's zipfile (numpy.load of an .npz, anything that
opens a zip by hand) and miniz inside torch (torch.load, torch.jit.load: torch._C.PyTorchFileReader).
They read the same bytes differently when an archive is unusual: zipfile trusts a ZIP64 end record
it finds right before the locator, miniz the one the locator points at; zipfile walks the central
directory by its byte size, miniz by its entry count; zipfile corrects offsets for data before
the archive, miniz does not; both let a later entry of a duplicated name win, miniz even when the
names differ only in case. A scanner that reads the archive a third way can be shown a harmless
member while the loader runs another.

So this module does three things:

1. `read_zip_layout` parses the archive strictly (APPNOTE.TXT) and lists every structural
   ambiguity: classic and ZIP64 end records that disagree, an entry count that is not the
   directory's, duplicate names (case-insensitive, as miniz compares them), a local header that
   disagrees with its directory entry, overlapping members, and any byte of the file that no
   member, directory or end record explains. Any of these is "ambiguous archive": the scanner
   cannot say which member a loader reads, so it never says "safe".
2. `open_zipfile` and `open_torch_reader` open the same bytes with the loaders' own readers, so
   the scanner walks exactly the members (and bytes) they would hand to an unpickler.
3. `torch_disagreements` cross-checks torch's record list, offsets and sizes against the layout.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass, field

from lmforge.files.containers import COPY_LIMIT_BYTES, BytesReader, ContainerError, Window, inflate

_EOCD = struct.Struct(
    "<4s4H2IH"
)  # signature, disk, directory disk, entries here, entries, size, offset, comment length
_LOCATOR = struct.Struct("<4sIQI")  # signature, disk with the ZIP64 record, its offset, total disks
_EOCD64 = struct.Struct("<4sQ2H2I4Q")  # signature, record size, versions, disks, entries here, entries, size, offset
_CENTRAL = struct.Struct("<4s6H3I5H2I")
_LOCAL = struct.Struct("<4s5H3I2H")
_MAX_16, _MAX_32 = 0xFFFF, 0xFFFFFFFF
MAX_DIRECTORY_BYTES = 256 << 20  # a central directory larger than this is refused, not parsed
STREAMED_METHODS = {0: "stored", 8: "deflate", 12: "bzip2", 14: "lzma"}  # what zipfile reads; miniz: 0 and 8


@dataclass(frozen=True)
class ZipEntry:
    """One central directory entry, with where its data lies (zipfile's reading of it)."""

    name: str  # as zipfile decodes it (UTF-8 when flagged, else cp437)
    raw_name: bytes
    header_offset: int
    data_offset: int
    compressed_size_bytes: int
    size_bytes: int
    method: int
    flags: int
    crc: int


@dataclass
class ZipLayout:
    entries: list[ZipEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # each one makes the archive ambiguous


def looks_like_zip(data, size: int) -> bool:
    """True when a zip reader would open `data`: a zip signature at byte 0 (numpy.load's and
    torch.load's test), or an end record whose central directory is found where miniz reads it
    (torch.jit.load opens such a file whatever precedes it) or where zipfile looks after its
    correction for data before the archive (zipfile.ZipFile opens it)."""
    if bytes(data[:4]) in (b"PK\x03\x04", b"PK\x05\x06"):
        return True
    end = _find_end_record(data, size)
    if end is None:
        return False
    _, _, _, _, entries, _, directory_offset, _ = _EOCD.unpack(bytes(data[end : end + 22]))
    if entries and bytes(data[directory_offset : directory_offset + 4]) == b"PK\x01\x02":
        return True
    try:
        return bool(read_zip_layout(data, size).entries)
    except (ContainerError, struct.error):
        return False


def _find_end_record(data, size: int) -> int | None:
    # zipfile (_EndRecData) and miniz both take the last signature in the final 64 KiB + 22 bytes.
    if size < 22:
        return None
    position = data.rfind(b"PK\x05\x06", max(0, size - 22 - 0xFFFF), size - 18)
    return position if position >= 0 else None


def read_zip_layout(data, size: int) -> ZipLayout:
    """Every entry of the archive and every way in which its structure is ambiguous.

    Raises ContainerError when there is no end record or no readable central directory: no
    loader can open such a file.
    """
    end = _find_end_record(data, size)
    if end is None:
        raise ContainerError("zip end-of-central-directory record not found")
    layout = ZipLayout()
    problems = layout.problems
    (_, disk, directory_disk, entries_here, entries, directory_bytes, directory_offset, comment_bytes) = _EOCD.unpack(
        bytes(data[end : end + 22])
    )
    if end + 22 + comment_bytes != size:
        problems.append(f"the end record's comment ends at byte {end + 22 + comment_bytes}, the file at byte {size}")
    if disk or directory_disk:
        problems.append("the end record names a disk other than the first (split archive)")
    directory_end = end
    locator = end - 20
    if locator >= 0 and bytes(data[locator : locator + 4]) == b"PK\x06\x07":
        _, locator_disk, record_offset, disks = _LOCATOR.unpack(bytes(data[locator : locator + 20]))
        if locator_disk != 0 or disks > 1:
            raise ContainerError("zip spans several disks; no loader reads it")
        zipfile_record = locator - _EOCD64.size  # zipfile reads it here, ignoring the locator's pointer
        if record_offset != zipfile_record:
            problems.append(
                f"the ZIP64 locator points at byte {record_offset}, zipfile reads the ZIP64 record "
                f"at byte {zipfile_record}"
            )
        if zipfile_record < 0 or bytes(data[zipfile_record : zipfile_record + 4]) != b"PK\x06\x06":
            problems.append("a ZIP64 locator without a ZIP64 end record where zipfile looks for it")
        else:
            (
                _,
                record_bytes,
                _,
                _,
                disk64,
                directory_disk64,
                entries_here64,
                entries64,
                directory_bytes64,
                directory_offset64,
            ) = _EOCD64.unpack(bytes(data[zipfile_record : zipfile_record + _EOCD64.size]))
            if record_bytes != _EOCD64.size - 12:
                problems.append(f"the ZIP64 end record declares {record_bytes} bytes; zipfile assumes 44")
            if disk64 or directory_disk64:
                problems.append("the ZIP64 end record names a disk other than the first")
            for label, classic, wide, placeholder in (
                ("entries on this disk", entries_here, entries_here64, _MAX_16),
                ("entries", entries, entries64, _MAX_16),
                ("directory size", directory_bytes, directory_bytes64, _MAX_32),
                ("directory offset", directory_offset, directory_offset64, _MAX_32),
            ):
                if classic not in (placeholder, wide):
                    problems.append(f"the classic end record says {label} {classic}, the ZIP64 record {wide}")
            entries_here, entries, directory_bytes, directory_offset = (
                entries_here64,
                entries64,
                directory_bytes64,
                directory_offset64,
            )
            directory_end = zipfile_record
    if entries_here != entries:
        problems.append(f"the end record counts {entries_here} entries on this disk and {entries} in all")
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise ContainerError(f"central directory of {directory_bytes} bytes; more than this scanner reads")
    # zipfile corrects every offset by the bytes found before the archive ("concat"); miniz does not.
    shift = directory_end - directory_bytes - directory_offset
    if shift:
        problems.append(
            f"the central directory lies {shift} bytes from where the end record puts it "
            "(data before the archive: zipfile and torch's reader disagree on every offset)"
        )
    start = directory_offset + shift
    if start < 0 or start + directory_bytes > size:
        raise ContainerError(f"central directory at byte {start} lies outside the file")
    layout.entries = _read_directory(data, size, start, directory_bytes, shift, problems)
    if len(layout.entries) != entries:
        problems.append(f"the end record counts {entries} entries, the central directory holds {len(layout.entries)}")
    _check_names(layout.entries, problems)
    _check_coverage(data, layout.entries, start, problems)
    return layout


def _read_directory(
    data, size: int, start: int, directory_bytes: int, shift: int, problems: list[str]
) -> list[ZipEntry]:
    """Walks the directory by its byte size, as zipfile does (_RealGetContents)."""
    directory = bytes(data[start : start + directory_bytes])
    entries: list[ZipEntry] = []
    position = 0
    while position < len(directory):
        if position + _CENTRAL.size > len(directory) or directory[position : position + 4] != b"PK\x01\x02":
            raise ContainerError(f"central directory entry {len(entries)} is corrupt at byte {start + position}")
        fields = _CENTRAL.unpack(directory[position : position + _CENTRAL.size])
        flags, method, crc = fields[3], fields[4], fields[7]
        compressed, size_bytes = fields[8], fields[9]
        name_bytes, extra_bytes, comment_bytes, disk_start = fields[10], fields[11], fields[12], fields[13]
        header_offset = fields[16]
        cursor = position + _CENTRAL.size
        raw_name = directory[cursor : cursor + name_bytes]
        extra = directory[cursor + name_bytes : cursor + name_bytes + extra_bytes]
        position = cursor + name_bytes + extra_bytes + comment_bytes
        if position > len(directory):
            raise ContainerError(f"central directory entry {len(entries)} runs past the directory")
        try:
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        except UnicodeDecodeError as error:
            raise ContainerError(f"entry name {raw_name!r} is flagged UTF-8 but is not") from error
        size_bytes, compressed, header_offset = _zip64_extra(
            extra, name, size_bytes, compressed, header_offset, problems
        )
        if disk_start:
            problems.append(f"{name}: lives on another disk ({disk_start})")
        header_offset += shift
        entries.append(
            _with_local_header(
                data, size, name, raw_name, header_offset, compressed, size_bytes, method, flags, crc, problems
            )
        )
    return entries


def _zip64_extra(
    extra: bytes, name: str, size_bytes: int, compressed: int, header_offset: int, problems: list[str]
) -> tuple[int, int, int]:
    """Reads the extra field as zipfile's ZipInfo._decodeExtra does, and flags what readers read differently."""
    position, seen64 = 0, False
    while position + 4 <= len(extra):
        kind, length = struct.unpack("<HH", extra[position : position + 4])
        body = extra[position + 4 : position + 4 + length]
        if len(body) != length:
            raise ContainerError(f"{name}: corrupt extra field {kind:04x}")
        if kind == 0x0001:
            if seen64:
                problems.append(f"{name}: two ZIP64 extra fields")
            seen64 = True
            values = []
            for value in (size_bytes, compressed, header_offset):
                if value == _MAX_32:
                    if len(body) < 8:
                        raise ContainerError(f"{name}: ZIP64 extra field too short")
                    value, body = struct.unpack("<Q", body[:8])[0], body[8:]
                values.append(value)
            size_bytes, compressed, header_offset = values
        elif kind == 0x7075:  # Info-ZIP Unicode Path: some readers take the name from here instead
            problems.append(f"{name}: a second name in a Unicode Path extra field")
        position += 4 + length
    return size_bytes, compressed, header_offset


def _with_local_header(
    data,
    size: int,
    name: str,
    raw_name: bytes,
    header_offset: int,
    compressed: int,
    size_bytes: int,
    method: int,
    flags: int,
    crc: int,
    problems: list[str],
) -> ZipEntry:
    data_offset = header_offset
    if (
        header_offset < 0
        or header_offset + _LOCAL.size > size
        or bytes(data[header_offset : header_offset + 4]) != b"PK\x03\x04"
    ):
        problems.append(f"{name}: no local header at byte {header_offset}")
    else:
        (
            _,
            _,
            local_flags,
            local_method,
            _,
            _,
            local_crc,
            local_compressed,
            local_size,
            local_name_bytes,
            local_extra_bytes,
        ) = _LOCAL.unpack(bytes(data[header_offset : header_offset + _LOCAL.size]))
        local_name = bytes(data[header_offset + _LOCAL.size : header_offset + _LOCAL.size + local_name_bytes])
        if local_name != raw_name:
            problems.append(f"{name}: the local header names it {local_name!r}")
        if (local_flags, local_method) != (flags, method):
            problems.append(
                f"{name}: the local header has flags {local_flags:#x} method {local_method}, "
                f"the directory flags {flags:#x} method {method}"
            )
        if (
            not flags & 0x8
            and (local_crc, local_compressed, local_size) != (crc, compressed, size_bytes)
            and (local_compressed, local_size) != (_MAX_32, _MAX_32)
        ):
            problems.append(f"{name}: the local header's sizes or CRC differ from the directory's")
        data_offset = header_offset + _LOCAL.size + local_name_bytes + local_extra_bytes
    return ZipEntry(name, raw_name, header_offset, data_offset, compressed, size_bytes, method, flags, crc)


def _check_names(entries: list[ZipEntry], problems: list[str]) -> None:
    """Duplicates decide which member a loader reads; miniz matches names case-insensitively and
    zipfile cuts a name at its first NUL, so names equal under either rule are duplicates too."""
    seen: dict[bytes, str] = {}
    for entry in entries:
        if b"\0" in entry.raw_name:
            problems.append(f"{entry.name!r}: a NUL inside the name (zipfile cuts it there)")
        for key in {entry.raw_name.lower(), entry.raw_name.split(b"\0", 1)[0].lower(), entry.name.lower().encode()}:
            if key in seen:
                problems.append(
                    f"two entries named {seen[key]!r} and {entry.name!r}: loaders disagree on which one is read"
                )
                break
            seen[key] = entry.name


_DESCRIPTOR_LAYOUTS = ((True, "<4sIII"), (False, "<III"), (True, "<4sIQQ"), (False, "<IQQ"))


def _check_coverage(data, entries: list[ZipEntry], directory_start: int, problems: list[str]) -> None:
    """Members, the directory and the end records must tile the file: a gap can hold a second
    archive another reader sees, an overlap lets one entry's bytes be read as two members."""
    position = 0
    for entry in sorted(entries, key=lambda item: (item.header_offset, item.name)):
        if entry.header_offset != position:
            what = (
                "overlaps the member before it"
                if entry.header_offset < position
                else (f"follows {entry.header_offset - position} bytes that no member explains (from byte {position})")
            )
            problems.append(f"{entry.name}: its local header at byte {entry.header_offset} {what}")
        data_end = entry.data_offset + entry.compressed_size_bytes
        position = max(position, data_end + _descriptor_bytes(data, entry, data_end))
    if position != directory_start:
        what = (
            "overlaps the central directory"
            if position > directory_start
            else (f"is followed by {directory_start - position} bytes that no member explains")
        )
        problems.append(f"the last member ends at byte {position} and {what} (directory at byte {directory_start})")


def _descriptor_bytes(data, entry: ZipEntry, offset: int) -> int:
    """Length of the data descriptor after a member's data (flag bit 3), checked against the directory."""
    if not entry.flags & 0x8:
        return 0
    for signed, layout in _DESCRIPTOR_LAYOUTS:
        length = struct.calcsize(layout)
        values = struct.unpack(layout, bytes(data[offset : offset + length])) if len(data) >= offset + length else None
        if values is None or (signed and values[0] != b"PK\x07\x08"):
            continue
        if tuple(values[-3:]) == (entry.crc, entry.compressed_size_bytes, entry.size_bytes):
            return length
    return 0  # no matching descriptor: the bytes after the data are reported as unexplained


# ---- the loaders' own readers ---------------------------------------------------------------
def open_zipfile(data) -> zipfile.ZipFile:
    """The archive as Python's zipfile (and so numpy.load) reads it. Raises ContainerError."""
    try:
        return zipfile.ZipFile(BytesReader(data))
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError, struct.error) as error:
        raise ContainerError(f"zipfile cannot open it: {error}") from error


def read_zipfile_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> tuple[bytes, str | None]:
    """A member's bytes as zipfile streams them to a loader, CRC not enforced (a streaming unpickler
    has run the payload before zipfile checks the CRC at the end); also the error that stopped it."""
    chunks, total = [], 0
    try:
        with archive.open(info) as handle:
            # zipfile checks the CRC only at the end of the stream; ZipExtFile's private field, not in the stubs
            handle._expected_crc = None  # type: ignore[attr-defined]
            while True:
                chunk = handle.read(min(1 << 20, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    return b"".join(chunks)[:max_bytes], f"decompresses to more than {max_bytes} bytes"
    except (
        zipfile.BadZipFile,
        NotImplementedError,
        RuntimeError,
        ValueError,
        OSError,
        EOFError,
        struct.error,
    ) as error:
        return b"".join(chunks), f"zipfile cannot read it: {error}"
    return b"".join(chunks), None


def read_raw_member(data, entry: ZipEntry, max_bytes: int) -> tuple[bytes | Window, str | None]:
    """A member's bytes from the layout alone (for entries zipfile does not list or cannot open):
    stored bytes in place (no copy of a multi-GB tensor), or inflated within `max_bytes`."""
    import bz2
    import lzma
    import zlib

    if entry.flags & 0x1:
        return b"", "member is encrypted"
    end = entry.data_offset + entry.compressed_size_bytes
    if end > len(data):
        return b"", f"member data runs past the end of the archive ({end} > {len(data)} bytes)"
    if entry.method == 0:
        if entry.compressed_size_bytes > COPY_LIMIT_BYTES:
            return Window(data, entry.data_offset, end), None
        return bytes(data[entry.data_offset : end]), None
    raw = Window(data, entry.data_offset, end)
    if entry.method == 8:
        return inflate(lambda: zlib.decompressobj(-15), raw, max_bytes)
    if entry.method == 12:
        return inflate(bz2.BZ2Decompressor, raw, max_bytes)
    if entry.method == 14:
        # zip's LZMA members carry a 4-byte version/size prefix before the properties (APPNOTE.TXT 5.8.8).
        head = bytes(raw[:4])
        properties_length = struct.unpack("<H", head[2:4])[0] if len(head) == 4 else 0
        try:
            properties = bytes(raw[4 : 4 + properties_length])
            # the private decoder zipfile's own LZMA reader uses; not in the stubs
            filters = [lzma._decode_filter_properties(lzma.FILTER_LZMA1, properties)]  # type: ignore[attr-defined]
        except (lzma.LZMAError, ValueError) as error:
            return b"", f"bad LZMA properties: {error}"
        return inflate(
            lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters),
            Window(data, entry.data_offset + 4 + properties_length, end),
            max_bytes,
        )
    return b"", f"unsupported zip compression method {entry.method}"


def open_torch_reader(data):
    """torch's own zip reader (miniz: what torch.load and torch.jit.load use) over `data`, or None
    when torch is not installed (then nothing on this machine reads the archive torch's way)."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch._C.PyTorchFileReader(BytesReader(data))
    except (RuntimeError, ValueError) as error:  # miniz errors; a record name that is not UTF-8
        raise ContainerError(f"torch's reader cannot open it: {str(error).splitlines()[0][:200]}") from error


def torch_prefix(entries: list[ZipEntry]) -> str | None:
    """The folder torch's reader prefixes to every record name: the first entry's top folder."""
    if not entries or "/" not in entries[0].name:
        return None
    return entries[0].name.split("/", 1)[0] + "/"


def torch_records(reader, entries: list[ZipEntry]) -> list[str]:
    """Every record torch's reader resolves, by name without the archive folder."""
    try:
        return list(reader.get_all_records())
    except (RuntimeError, ValueError):  # a member outside the archive folder: torch.load fails, but lookups still work
        prefix = torch_prefix(entries) or ""
        names = [entry.name[len(prefix) :] for entry in entries if entry.name.startswith(prefix)]
        return [name for name in names if _has_record(reader, name)]


def _has_record(reader, name: str) -> bool:
    try:
        return reader.has_record(name)
    except (RuntimeError, ValueError):
        return False


def torch_disagreements(reader, entries: list[ZipEntry], records: list[str]) -> list[str]:
    """Where torch's reader sees a record differently from the layout (which is zipfile's view)."""
    prefix = torch_prefix(entries)
    if prefix is None:
        return []
    by_name = {entry.name: entry for entry in entries}
    problems = []
    for record in records:
        entry = by_name.get(prefix + record)
        if entry is None:
            problems.append(f"torch's reader lists {prefix + record!r}, which zipfile does not")
            continue
        try:
            offset, size_bytes = reader.get_record_offset(record), reader.get_record_size(record)
        except (RuntimeError, ValueError) as error:
            problems.append(f"torch's reader cannot locate {entry.name}: {str(error).splitlines()[0][:120]}")
            continue
        if entry.method == 0 and (offset, size_bytes) != (entry.data_offset, entry.size_bytes):
            problems.append(
                f"{entry.name}: torch reads {size_bytes} bytes at byte {offset}, zipfile "
                f"{entry.size_bytes} bytes at byte {entry.data_offset}"
            )
    return problems
