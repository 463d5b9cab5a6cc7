"""`lmforge scan`: is this file safe to load? Decided from its bytes, never by running it.

The promise: "safe" means that no loader lmforge knows of (pickle.load, torch.load with
weights_only=False, torch.jit.load, numpy.load with allow_pickle=True, joblib on gzip/bz2/xz) can
run code from this file, because every byte stream any of them would unpickle was walked to its
STOP opcode and imports only allowlisted globals. So every file is read every way a loader could
read it, not one way chosen from its magic bytes:

- as a pickle from byte 0, whatever its name or first bytes (pickle.load and numpy.load unpickle
  any file they do not recognise, torch.load any file that is neither zip nor tar), with all the
  concatenated pickles after it (legacy torch files hold five);
- as a zip (zip_archive.py: the layout checked strictly, members read through zipfile and through
  torch's own reader), a tar (tarfile, with torch's pre-1.0 record format), an .npy (numpy's own
  header reader), a gzip/bz2/xz wrapper, recursively.

Verdicts: "safe"; "unsafe" (exit 1: code would run: a global off the allowlist, a call the walker
cannot resolve, TorchScript code); "unproven" (exit 2: cannot prove safe: an ambiguous archive, a
pickle that does not parse, a limit reached, a symlink leaving the scanned folder, a container
that cannot be opened); "error" (the file could not be read at all).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmforge.errors import NotFoundError
from lmforge.files import zip_archive
from lmforge.files.containers import (
    COPY_LIMIT_BYTES,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    ContainerError,
    decompress_stream,
    detect_kind,
    is_tar,
    looks_like_onnx,
    read_npy_header,
    read_tar_members,
)
from lmforge.files.pickle_scan import Finding, StreamReport, scan_pickle_stream
from lmforge.files.torch_zip import STORAGE_DTYPES

# torch/serialization.py MAGIC_NUMBER: the first of the pickles in a legacy (non-zip) torch file.
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_TORCH_PICKLES = 5  # magic, protocol version, sys info, the object, storage keys
MAX_NESTING_DEPTH = 6
MAX_FINDINGS_PER_FILE = 1000
MAX_MEMBERS_PER_FILE = 200_000
MAX_STREAMS_PER_BLOB = 10_000  # a file of millions of 2-byte pickles is refused, not walked for minutes
_HEAD_BYTES = 512
# Members whose presence makes a zip a TorchScript (torch.jit.load) or torch.package archive: both
# compile and run Python code shipped inside the archive, whatever data.pkl names.
_CODE_FOLDERS = ("code/",)
_CODE_RECORDS = ("constants.pkl", "bytecode.pkl", ".data/extern_modules")

# How a loader treats a byte stream:
_LOADED = "loaded"  # it is unpickled (a zip's .pkl member, an object array's payload, legacy pickles 2-5)
_FILE = "file"  # it is a file: pickle.load, numpy.load and torch.load unpickle any file they do not recognise
_EXTRA = "extra"  # no loader unpickles it (tensor bytes, bytes after the last pickle): only a real pickle counts


@dataclass
class FileReport:
    """The verdict on one file, with every reason it is not proven safe."""

    path: str
    format: str
    verdict: str  # safe | unsafe | unproven | error
    size_bytes: int
    findings: list[Finding] = field(default_factory=list)
    globals: list[str] = field(default_factory=list)  # distinct globals imported by its pickles
    pickle_streams: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanReport:
    files: list[FileReport]

    @property
    def unsafe(self) -> list[FileReport]:
        return [report for report in self.files if report.verdict == "unsafe"]

    @property
    def unproven(self) -> list[FileReport]:
        return [report for report in self.files if report.verdict == "unproven"]

    @property
    def errors(self) -> list[FileReport]:
        return [report for report in self.files if report.verdict == "error"]

    @property
    def exit_code(self) -> int:
        """0 all safe; 1 something unsafe; 2 something not proven safe or unreadable (and nothing unsafe)."""
        if self.unsafe:
            return 1
        return 2 if self.unproven or self.errors else 0

    def to_dict(self) -> dict:
        return {
            "exit_code": self.exit_code,
            "files_total": len(self.files),
            "files_unsafe": len(self.unsafe),
            "files_unproven": len(self.unproven),
            "files_error": len(self.errors),
            "files": [report.to_dict() for report in self.files],
        }


class _Collector:
    """Findings, globals and stream counts gathered while walking one file's containers."""

    def __init__(self, max_decompressed_bytes: int) -> None:
        self.findings: list[Finding] = []
        self.globals: set[str] = set()
        self.streams = 0
        # One budget for the whole file, so a zip of zips of bombs (42.zip) cannot multiply it.
        self.decompress_budget_bytes = max_decompressed_bytes
        self.members_left = MAX_MEMBERS_PER_FILE

    def add_stream(self, report: StreamReport, member: str | None, severity: str | None = None, note: str = "") -> None:
        self.streams += 1
        if len(self.globals) < MAX_FINDINGS_PER_FILE:
            self.globals.update(ref.name for ref in report.globals)
        for finding in report.findings:
            self._add(
                Finding(
                    finding.kind,
                    finding.message + note,
                    finding.offset,
                    finding.opcode,
                    finding.global_name,
                    member,
                    severity or finding.severity,
                )
            )

    def problem(
        self, kind: str, message: str, member: str | None, offset: int | None = None, severity: str = "unproven"
    ) -> None:
        self._add(Finding(kind, message, offset, None, None, member, severity))

    def _add(self, finding: Finding) -> None:
        if len(self.findings) < MAX_FINDINGS_PER_FILE:
            self.findings.append(finding)
        elif len(self.findings) == MAX_FINDINGS_PER_FILE:
            self.findings.append(
                Finding(
                    "truncated-report",
                    f"more than {MAX_FINDINGS_PER_FILE} findings; rest omitted",
                    severity=finding.severity,
                )
            )

    def spend(self, size_bytes: int, member: str | None) -> bool:
        """Takes `size_bytes` from the decompression budget; False (and a finding) when it is spent."""
        if size_bytes > self.decompress_budget_bytes:
            self.problem(
                "limit",
                f"more than the {DEFAULT_MAX_DECOMPRESSED_BYTES} bytes this scan decompresses per "
                "file; the rest was not scanned",
                member,
            )
            return False
        self.decompress_budget_bytes -= size_bytes
        return True

    def verdict(self) -> str:
        if any(finding.severity == "unsafe" for finding in self.findings):
            return "unsafe"
        return "unproven" if self.findings else "safe"


def _join(member: str | None, name: str) -> str:
    return f"{member}!{name}" if member else name


# ---- pickle streams --------------------------------------------------------------------------
def _judge_stream(sink: _Collector, data, start: int, end: int, member: str | None, context: str) -> StreamReport:
    """Walks one stream at `start` and records what it means in `context`; returns the walk."""
    if context == _LOADED:
        report = scan_pickle_stream(data, start, end, strict=True)
        sink.add_stream(report, member)
        return report
    # pickle.load and numpy.load set no persistent_load: a persistent id stops them.
    report = scan_pickle_stream(data, start, end, strict=False, persistent_ids=False)
    if report.complete:  # it is a pickle: judge every opcode
        report = scan_pickle_stream(data, start, end, strict=True, persistent_ids=False)
        sink.add_stream(report, member)
    elif report.acted:  # the bytes stop parsing later, but a call off the allowlist runs first
        sink.add_stream(report, member, note=f" (then the stream breaks: {report.parse_error})")
    elif context == _FILE and report.findings:
        # Nothing is called, but pickle.load of this file imports these modules (running their
        # top-level code) before it fails: no proof either way.
        sink.add_stream(
            report,
            member,
            severity="unproven",
            note=f", before the bytes stop parsing as a pickle ({report.parse_error})",
        )
    elif (
        context == _FILE and bytes(data[start : start + 1]) == b"\x80" and bytes(data[start + 1 : start + 2]) <= b"\x05"
    ):
        sink.problem("malformed", f"a pickle (PROTO opcode) that does not parse: {report.parse_error}", member, start)
    return report


def _scan_streams(sink: _Collector, data, start: int, end: int, member: str | None, context: str) -> str | None:
    """Walks every concatenated pickle from `start`; returns "pickle", "pytorch-legacy" or None (not a pickle).

    torch.load of a legacy file unpickles five streams when the first one equals its magic number
    (compared with Python's `!=`, so a value built by a call could pass too): those are strict.
    """
    position, index, legacy, certain = start, 0, False, False
    while position < end:
        if index >= MAX_STREAMS_PER_BLOB:
            sink.problem(
                "limit",
                f"more than {MAX_STREAMS_PER_BLOB} concatenated pickles; the rest was not scanned",
                member,
                position,
            )
            break
        strict = context if index == 0 else (_LOADED if legacy and index < _LEGACY_TORCH_PICKLES else _EXTRA)
        report = _judge_stream(sink, data, position, end, member, strict)
        if report.end_offset is None:  # incomplete
            break
        if index == 0 and start == 0 and context == _FILE:  # torch.load opens files, not members
            certain = report.result_int == LEGACY_TORCH_MAGIC
            legacy = certain or report.result_from_call
        position, index = report.end_offset, index + 1
    if certain and index < _LEGACY_TORCH_PICKLES:
        sink.problem("malformed", f"legacy torch file holds {index} of its {_LEGACY_TORCH_PICKLES} pickles", member)
    if index == 0:
        return None
    return "pytorch-legacy" if certain else "pickle"


# ---- blobs -----------------------------------------------------------------------------------
def _scan_blob(sink: _Collector, data, size: int, member: str | None, depth: int, context: str) -> str:
    """Scans `data[:size]` every way a loader could read it; returns the format name."""
    if depth > MAX_NESTING_DEPTH:
        sink.problem("limit", f"archives nested deeper than {MAX_NESTING_DEPTH} levels; not scanned", member)
        return "nested"
    pickled = _scan_streams(sink, data, 0, size, member, context)
    head = bytes(data[:_HEAD_BYTES])
    kind = detect_kind(head, size)
    container = None
    if kind == "zip" or zip_archive.looks_like_zip(data, size):
        container = _scan_zip(sink, data, size, member, depth)
    elif kind in ("gzip", "bz2", "xz", "zlib", "lzma"):
        inner, problem = decompress_stream(kind, data, sink.decompress_budget_bytes)
        sink.decompress_budget_bytes -= len(inner)
        # zlib and lzma are told by two or three bytes any file may start with: when nothing
        # decompresses it is not one (and a loader gets nothing from it either).
        if inner or kind not in ("zlib", "lzma"):
            if problem:
                sink.problem(
                    "unreadable" if "more than" not in problem else "limit", f"{kind} payload: {problem}", member
                )
            container = f"{kind}+" + _scan_blob(sink, inner, len(inner), _join(member, f"<{kind}>"), depth + 1, _FILE)
    elif kind in ("7z", "zstd", "lz4"):
        sink.problem("container", f"cannot open a {kind} container; extract it and scan the files inside", member)
        container = kind
    elif kind == "npy":
        container = _scan_npy(sink, data, size, member)
    if is_tar(data):
        container = _scan_tar(sink, data, member, depth)
    named = kind if kind in ("safetensors", "gguf") else ("onnx" if looks_like_onnx(head) else None)
    names = [name for name in (container or named, pickled) if name]
    return "+".join(names) if names else ("empty" if size == 0 else "other")


def _scan_npy(sink: _Collector, data, size: int, member: str | None) -> str:
    try:
        header = read_npy_header(data)
    except ContainerError as error:
        sink.problem("unreadable", str(error), member)
        return "numpy-npy"
    if header.has_objects:  # numpy.load(allow_pickle=True) unpickles the bytes after the header
        _scan_streams(sink, data, header.data_offset, size, member, _LOADED)
    return "numpy-npy"


# ---- zip -------------------------------------------------------------------------------------
def _scan_zip(sink: _Collector, data, size: int, member: str | None, depth: int) -> str:
    """Every member any zip reader would hand a loader, walked; every structural doubt reported.

    Members are read through zipfile (numpy.load) and through torch's own reader (torch.load,
    torch.jit.load); members of the strict layout that neither reads whole are read from the
    layout. The same bytes are walked once.
    """
    walk = _ZipWalk(sink, data, member, depth)
    try:
        layout = zip_archive.read_zip_layout(data, size)
        walk.entries = layout.entries
        for problem in layout.problems:
            sink.problem("ambiguous-archive", f"ambiguous archive: {problem}", member)
    except ContainerError as error:
        sink.problem("unreadable", f"zip archive: {error}", member)
    walk.zipfile_members()
    walk.layout_members()
    walk.torch_records()
    lowered = [name.lower().split("/", 1)[-1] for name in walk.names]
    if any(name.startswith(_CODE_FOLDERS) or name in _CODE_RECORDS for name in lowered):
        sink.problem(
            "code",
            "TorchScript or torch.package archive: torch.jit.load runs the Python code in the archive "
            "(code/, constants.pkl), whatever data.pkl names",
            member,
            severity="unsafe",
        )
        return "torchscript"
    if "data.pkl" in lowered:
        return "pytorch-zip"
    if walk.names and all(name.endswith(".npy") for name in walk.names):
        return "numpy-npz"
    return "zip"


class _ZipWalk:
    """The members of one zip as each reader sees them, each distinct body walked once."""

    def __init__(self, sink: _Collector, data, member: str | None, depth: int) -> None:
        self.sink, self.data, self.member, self.depth = sink, data, member, depth
        self.entries: list[zip_archive.ZipEntry] = []
        self.names: list[str] = []
        self.walked: set[tuple] = set()  # (local header offset, compressed size, method) read whole
        self.digests: set[bytes] = set()  # inflated bodies walked, by content: torch may inflate the same

    def _walk(self, name: str, body, key: tuple | None, problem: str | None) -> None:
        label = _join(self.member, name)
        if problem:
            self.sink.problem("unreadable", f"zip member: {problem}", label)
        elif key is not None:  # bytes cut short may still be read whole by another reader
            self.walked.add(key)
        if key is not None and key[2] != 0:
            self.digests.add(hashlib.sha256(bytes(body)).digest())
        self.names.append(name)
        loaded = name.lower().endswith(".pkl")  # torch.load and torch.jit.load unpickle .pkl records whole
        _scan_blob(self.sink, body, len(body), label, self.depth + 1, _LOADED if loaded else _EXTRA)

    def _take_member(self) -> bool:
        if self.sink.members_left <= 0:
            self.sink.problem(
                "limit", f"more than {MAX_MEMBERS_PER_FILE} archive members; the rest was not scanned", self.member
            )
            return False
        self.sink.members_left -= 1
        return True

    def zipfile_members(self) -> None:
        """zipfile's reading: numpy.load of an .npz, anything that opens the zip with Python."""
        try:
            archive = zip_archive.open_zipfile(self.data)
            infos = archive.infolist()
        except ContainerError as error:
            if self.entries:
                self.sink.problem("unreadable", f"zip archive: {error}", self.member)
            return
        places = [(entry.header_offset, entry.name.split("\0", 1)[0]) for entry in self.entries]
        same_view = [(info.header_offset, info.filename) for info in infos] == places
        if not same_view:
            self.sink.problem(
                "ambiguous-archive",
                "ambiguous archive: zipfile lists other members than the central directory holds",
                self.member,
            )
        for index, info in enumerate(infos):
            key = (info.header_offset, info.compress_size, info.compress_type)
            if key in self.walked or not self._take_member():
                continue
            entry = self.entries[index] if same_view else None
            if entry is not None and entry.method == 0 and entry.compressed_size_bytes > COPY_LIMIT_BYTES:
                body, problem = zip_archive.read_raw_member(self.data, entry, 0)  # in place: what zipfile streams
            else:
                body, problem = zip_archive.read_zipfile_member(archive, info, self.sink.decompress_budget_bytes)
                if info.compress_type != 0:
                    self.sink.decompress_budget_bytes -= len(body)
            self._walk(info.filename, body, key, problem)

    def layout_members(self) -> None:
        """The strict layout's members that zipfile did not read whole."""
        for entry in self.entries:
            key = (entry.header_offset, entry.compressed_size_bytes, entry.method)
            if key in self.walked or not self._take_member():
                continue
            body, problem = zip_archive.read_raw_member(self.data, entry, self.sink.decompress_budget_bytes)
            if entry.method != 0:
                self.sink.decompress_budget_bytes -= len(body)
            self._walk(entry.name, body, key, problem)

    def torch_records(self) -> None:
        """torch's reading (miniz): the records torch.load and torch.jit.load resolve."""
        try:
            reader = zip_archive.open_torch_reader(self.data)
        except ContainerError:
            return  # torch.load and torch.jit.load cannot open it either
        if reader is None:
            return
        records = zip_archive.torch_records(reader, self.entries)
        for problem in zip_archive.torch_disagreements(reader, self.entries, records):
            self.sink.problem("ambiguous-archive", f"ambiguous archive: {problem}", self.member)
        prefix = zip_archive.torch_prefix(self.entries) or ""
        stored = {
            (entry.data_offset, entry.size_bytes)
            for entry in self.entries
            if entry.method == 0 and (entry.header_offset, entry.compressed_size_bytes, entry.method) in self.walked
        }
        for record in records:
            try:
                offset, size_bytes = reader.get_record_offset(record), reader.get_record_size(record)
            except (RuntimeError, ValueError):
                continue  # reported by torch_disagreements
            if (offset, size_bytes) in stored:
                continue  # stored bytes at the same place: walked already
            label = _join(self.member, prefix + record)
            if not self._take_member() or not self.sink.spend(size_bytes, label):
                continue
            try:
                body = reader.get_record(record)
            except (RuntimeError, ValueError) as error:
                self.sink.problem(
                    "unreadable", f"torch's reader cannot read it: {str(error).splitlines()[0][:160]}", label
                )
                continue
            if hashlib.sha256(bytes(body)).digest() not in self.digests:
                self._walk(prefix + record, body, None, None)


# ---- tar (torch's pre-1.0 format) --------------------------------------------------------------
def _scan_tar(sink: _Collector, data, member: str | None, depth: int) -> str:
    """Every member as tarfile reads it; torch's `storages`, `tensors` and `pickle` as torch reads them."""
    file_format = "tar"
    for item in read_tar_members(data, sink.decompress_budget_bytes):
        label = _join(member, item.name)
        if item.problem or item.body is None:
            sink.problem("unreadable", f"tar member {item.name}: {item.problem}", label)
        elif item.name in ("storages", "tensors"):
            _scan_legacy_records(sink, item.body, label, storages=item.name == "storages")
            file_format = "pytorch-tar"
        else:
            loaded = item.name == "pickle"  # torch.load unpickles this member whole
            _scan_blob(sink, item.body, len(item.body), label, depth + 1, _LOADED if loaded else _FILE)
    return file_format


def _scan_legacy_records(sink: _Collector, body, label: str, storages: bool) -> None:
    """torch's legacy_load reads `storages` as: a count, then per storage a pickle (key, location,
    storage type) followed by an int64 element count and the raw bytes, then a pickle of views;
    `tensors` as: a count, then per tensor a pickle followed by ndim (int32), 4 bytes, sizes,
    strides and an offset (torch/serialization.py legacy_load). Every pickle is walked strictly."""
    size = len(body)
    first = _judge_stream(sink, body, 0, size, label, _LOADED)
    if first.end_offset is None:  # incomplete
        return
    if first.result_int is None or first.result_int < 0:
        sink.problem(
            "malformed", "the record count is not a number this scan can follow; cannot prove the rest safe", label, 0
        )
        return
    position = first.end_offset
    for index in range(first.result_int):
        if index >= MAX_STREAMS_PER_BLOB:
            sink.problem(
                "limit", f"more than {MAX_STREAMS_PER_BLOB} records; the rest was not scanned", label, position
            )
            return
        report = _judge_stream(sink, body, position, size, label, _LOADED)
        if report.end_offset is None:  # incomplete
            return
        position = report.end_offset
        skip = _legacy_raw_bytes(body, position, report, storages)
        if skip is None or position + skip > size:
            sink.problem(
                "malformed",
                f"record {index} has no raw data this scan can follow; cannot prove the rest safe",
                label,
                position,
            )
            return
        position += skip
    if storages:  # the storage views pickle
        report = _judge_stream(sink, body, position, size, label, _LOADED)
        position = report.end_offset if report.end_offset is not None else size
    if position < size:  # bytes torch never reads
        _scan_streams(sink, body, position, size, label, _EXTRA)


def _legacy_raw_bytes(body, position: int, report: StreamReport, storages: bool) -> int | None:
    """How many raw bytes torch reads after a record's pickle, or None when it cannot be told."""
    if storages:
        kinds = {ref.name.rsplit(".", 1)[-1] for ref in report.globals}
        element_bytes = {STORAGE_DTYPES[kind][1] for kind in kinds if kind in STORAGE_DTYPES}
        if len(element_bytes) != 1 or len(bytes(body[position : position + 8])) != 8:
            return None
        count = int.from_bytes(bytes(body[position : position + 8]), "little", signed=True)
        return 8 + count * element_bytes.pop() if count >= 0 else None
    header = bytes(body[position : position + 4])
    if len(header) != 4:
        return None
    ndim = int.from_bytes(header, "little", signed=True)
    return 8 + 16 * ndim + 8 if ndim >= 0 else None


# ---- files and folders -------------------------------------------------------------------------
def scan_bytes(data, *, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> tuple[str, _Collector]:
    """Scans an in-memory file; returns its format and what was found (used by scan_file and tests)."""
    sink = _Collector(max_decompressed_bytes)
    file_format = _scan_blob(sink, data, len(data), None, 0, _FILE)
    return file_format, sink


def scan_file(
    path: str | os.PathLike[str], *, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
) -> FileReport:
    """The verdict on one file. The file is memory-mapped, so a multi-GB checkpoint is not copied."""
    target = Path(path)
    started = time.perf_counter()
    try:
        size = target.stat().st_size
        with open(target, "rb") as handle:
            if size == 0:
                file_format, sink = scan_bytes(b"", max_decompressed_bytes=max_decompressed_bytes)
            else:
                with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                    file_format, sink = scan_bytes(view, max_decompressed_bytes=max_decompressed_bytes)
    except OSError as error:
        return FileReport(
            str(target),
            "unknown",
            "error",
            0,
            seconds=time.perf_counter() - started,
            error=f"cannot read: {error.strerror or error}",
        )
    return FileReport(
        path=str(target),
        format=file_format,
        verdict=sink.verdict(),
        size_bytes=size,
        findings=sink.findings,
        globals=sorted(sink.globals),
        pickle_streams=sink.streams,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class ScanTarget:
    """A path a loader could read: a file to scan, or why it cannot be scanned (`problem`)."""

    path: Path
    problem: str | None = None


def collect_targets(paths: Iterable[str | os.PathLike[str]]) -> list[ScanTarget]:
    """Every file under `paths`, so that a folder's verdict covers every file a loader reaches through it.

    A symlink inside a folder is followed: to a file, that file is scanned under the link's name;
    to a folder inside the scanned one, that folder is scanned anyway under its real path (a
    resolved path has no links left, so the walk reaches it). A link to a file is scanned wherever the
    file lives. A symlink to a folder outside the scanned one, a broken symlink and a special file (FIFO,
    device) are targets with a problem: "not proven safe", exit 2.
    """
    targets: list[ScanTarget] = []
    for path in paths:
        target = Path(path)
        if not target.exists() and not target.is_symlink():
            raise NotFoundError(f"{target} does not exist")
        if target.is_dir():
            _walk_folder(target, target.resolve(), targets)
        else:
            targets.append(ScanTarget(target))
    return targets


def _walk_folder(folder: Path, root: Path, targets: list[ScanTarget]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        targets.append(ScanTarget(folder, f"cannot list this folder: {error.strerror or error}"))
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError):
                targets.append(ScanTarget(path, "a broken symlink: nothing to scan behind it"))
                continue
            if real.is_file():
                # The bytes a loader reads through the link, wherever they live (a Hugging Face cache snapshot
                # links every file to ../../blobs/): scanned under the link's name.
                targets.append(ScanTarget(path))
            elif not real.is_relative_to(root):
                targets.append(
                    ScanTarget(
                        path,
                        f"a symlink to the folder {real}, outside the scanned one: a loader "
                        "reads it through this folder, this scan does not (scan that folder)",
                    )
                )
            elif not real.is_dir():
                targets.append(ScanTarget(path, "a symlink to a special file (a FIFO, socket or device)"))
        elif entry.is_dir():
            _walk_folder(path, root, targets)
        elif entry.is_file():
            targets.append(ScanTarget(path))
        else:
            targets.append(
                ScanTarget(
                    path,
                    "not a regular file (a FIFO, socket or device): a loader reading it gets "
                    "bytes this scan cannot see",
                )
            )


def scan_targets(
    targets: Iterable[ScanTarget],
    *,
    on_file: Callable[[Path], None] | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> ScanReport:
    """Scans targets from collect_targets; `on_file` is called before each one (progress)."""
    reports = []
    for target in targets:
        if on_file:
            on_file(target.path)
        if target.problem:
            kind = "link" if "symlink" in target.problem else "not-a-file"
            reports.append(
                FileReport(
                    str(target.path), kind, "unproven", 0, findings=[Finding(kind, target.problem, severity="unproven")]
                )
            )
        else:
            reports.append(scan_file(target.path, max_decompressed_bytes=max_decompressed_bytes))
    return ScanReport(reports)


def scan_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    on_file: Callable[[Path], None] | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> ScanReport:
    """Scans files and directories (recursively, following symlinks that stay inside them)."""
    return scan_targets(collect_targets(paths), on_file=on_file, max_decompressed_bytes=max_decompressed_bytes)


def scan_path(path: str | os.PathLike[str]) -> ScanReport:
    """Scans one file or directory; the entry point `lmforge inspect` uses for its safety verdict."""
    return scan_paths([path])
