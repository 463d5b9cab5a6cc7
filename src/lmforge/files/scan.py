"""`lmforge scan`: is this file safe to load? Decided from its bytes, never by running it.

Every file is sniffed by its magic bytes, whatever its name: zip checkpoints (every member,
whatever its folder), legacy torch files (all of their concatenated pickles), raw pickles,
.npy/.npz object arrays, tar, gzip/bz2/xz wrappers (decompressed with a cap) and archives nested
in archives. safetensors, GGUF and ONNX hold no code by construction, but their first bytes are
still walked as a pickle so a polyglot file cannot hide behind a safe-looking header.

Verdicts: "safe" (proven: every pickle stream imports only allowlisted globals), "unsafe" (a
finding: a global off the allowlist, an unresolvable call, a malformed stream, an unreadable
member, a container that cannot be scanned), "error" (the file itself could not be read).
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmforge.errors import NotFoundError
from lmforge.files.containers import (
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    ContainerError,
    decompress_stream,
    detect_kind,
    looks_like_onnx,
    read_npy_header,
    read_tar_members,
    read_zip_member,
    read_zip_members,
)
from lmforge.files.pickle_scan import Finding, StreamReport, scan_pickle_stream

# torch/serialization.py MAGIC_NUMBER: the first of the pickles in a legacy (non-zip) torch file.
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_TORCH_PICKLES = 5  # magic, protocol version, sys info, the object, storage keys
MAX_NESTING_DEPTH = 6
MAX_FINDINGS_PER_FILE = 1000
MAX_MEMBERS_PER_FILE = 200_000
MAX_STREAMS_PER_BLOB = 10_000  # a file of millions of 2-byte pickles is refused, not walked for minutes
_HEAD_BYTES = 512


@dataclass
class FileReport:
    """The verdict on one file, with every reason it is not proven safe."""

    path: str
    format: str
    verdict: str  # safe | unsafe | error
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
    def errors(self) -> list[FileReport]:
        return [report for report in self.files if report.verdict == "error"]

    @property
    def exit_code(self) -> int:
        """0 all safe, 1 something unsafe, 2 something could not be read (and nothing unsafe)."""
        if self.unsafe:
            return 1
        return 2 if self.errors else 0

    def to_dict(self) -> dict:
        return {
            "exit_code": self.exit_code,
            "files_total": len(self.files),
            "files_unsafe": len(self.unsafe),
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
        self.members_left = MAX_MEMBERS_PER_FILE  # overlapping zip entries could otherwise multiply work

    def add_stream(self, report: StreamReport, member: str | None) -> None:
        self.streams += 1
        if len(self.globals) < MAX_FINDINGS_PER_FILE:
            self.globals.update(ref.name for ref in report.globals)
        for finding in report.findings:
            self._add(_with_member(finding, member))

    def problem(self, kind: str, message: str, member: str | None, offset: int | None = None) -> None:
        self._add(Finding(kind, message, offset, None, None, member))

    def _add(self, finding: Finding) -> None:
        if len(self.findings) < MAX_FINDINGS_PER_FILE:
            self.findings.append(finding)
        elif len(self.findings) == MAX_FINDINGS_PER_FILE:
            self.findings.append(Finding("truncated-report", f"more than {MAX_FINDINGS_PER_FILE} findings; rest omitted"))


def _with_member(finding: Finding, member: str | None) -> Finding:
    return Finding(finding.kind, finding.message, finding.offset, finding.opcode, finding.global_name, member)


def _join(member: str | None, name: str) -> str:
    return f"{member}!{name}" if member else name


def _scan_streams(sink: _Collector, data, start: int, end: int, member: str | None, strict_first: bool) -> bool:
    """Walks every concatenated pickle stream from `start`; returns True for a legacy torch file.

    Streams a loader unpickles are strict; any further bytes are sniffed until they stop parsing.
    """
    position, index, legacy = start, 0, False
    while position < end:
        if index >= MAX_STREAMS_PER_BLOB:
            sink.problem("container", f"more than {MAX_STREAMS_PER_BLOB} concatenated pickles; the rest was not scanned",
                         member, position)
            break
        strict = (index == 0 and strict_first) or (legacy and index < _LEGACY_TORCH_PICKLES)
        report = scan_pickle_stream(data, position, end, strict=strict)
        if not strict and not report.complete:
            if report.findings:  # bytes that break later, but would already have called a gadget
                sink.add_stream(report, member)
            break
        if not strict:  # it parsed to its STOP: a real pickle, so judge it strictly
            report = scan_pickle_stream(data, position, end, strict=True)
        sink.add_stream(report, member)
        if index == 0 and report.result_int == LEGACY_TORCH_MAGIC:
            legacy = True
        if not report.complete:
            break
        position, index = report.end_offset, index + 1
    if legacy and index < _LEGACY_TORCH_PICKLES:
        sink.problem("malformed", f"legacy torch file holds {index} of its {_LEGACY_TORCH_PICKLES} pickles", member)
    return legacy


# How sure we are that a loader unpickles a blob: "always" (a zip's .pkl member: must parse as a
# pickle), "proto" (a file or tar member: strict when it starts with a PROTO opcode, else sniffed),
# "sniff" (any other archive member, e.g. tensor storage bytes: only importable gadgets count).
_ALWAYS, _PROTO, _SNIFF = "always", "proto", "sniff"


def _scan_blob(sink: _Collector, data, size: int, member: str | None, depth: int, mode: str) -> str:
    """Scans `data[:size]` by its magic bytes and returns the detected format name."""
    if depth > MAX_NESTING_DEPTH:
        sink.problem("container", f"archives nested deeper than {MAX_NESTING_DEPTH} levels; not scanned", member)
        return "nested"
    head = bytes(data[:_HEAD_BYTES])
    kind = detect_kind(head, size)
    if kind not in ("pickle", "unknown", "safetensors", "gguf"):
        # A polyglot: the container's magic bytes could also start a pickle a careless loader runs.
        polyglot = scan_pickle_stream(data, 0, size, strict=False)
        if polyglot.findings:
            sink.add_stream(polyglot, member)
    if kind == "zip":
        return _scan_zip(sink, data, size, member, depth)
    if kind in ("gzip", "bz2", "xz"):
        try:
            inner = decompress_stream(kind, data, sink.decompress_budget_bytes)
            sink.decompress_budget_bytes -= len(inner)
        except ContainerError as error:
            sink.problem("unreadable", f"{kind} payload: {error}", member)
            return kind
        inner_format = _scan_blob(sink, inner, len(inner), _join(member, f"<{kind}>"), depth + 1, mode)
        return f"{kind}+{inner_format}"
    if kind in ("7z", "zstd"):
        sink.problem("container", f"cannot scan {kind} container; extract it and scan the files inside", member)
        return kind
    if kind == "tar":
        for name, body, problem in read_tar_members(data, sink.decompress_budget_bytes):
            if problem or body is None:
                sink.problem("unreadable", f"tar member {name}: {problem}", _join(member, name))
            else:
                _scan_blob(sink, body, len(body), _join(member, name), depth + 1, _PROTO)
        return "tar"
    if kind == "npy":
        return _scan_npy(sink, data, size, member)
    if mode == _ALWAYS or (kind == "pickle" and mode == _PROTO):
        return "pytorch-legacy" if _scan_streams(sink, data, 0, size, member, strict_first=True) else "pickle"

    # No container magic: walk the start as a pickle in sniff mode (protocol 0/1 pickles have no
    # PROTO byte; a polyglot could be a pickle and a safetensors header at once).
    sniff = scan_pickle_stream(data, 0, size, strict=False)
    if sniff.complete:
        legacy = _scan_streams(sink, data, 0, size, member, strict_first=True)
        return "pytorch-legacy" if legacy else "pickle"
    if sniff.findings:
        sink.add_stream(sniff, member)
        return "pickle"
    if kind in ("safetensors", "gguf"):
        return kind
    if kind == "pickle":
        return "other"
    return "onnx" if looks_like_onnx(head) else ("empty" if size == 0 else "other")


def _scan_zip(sink: _Collector, data, size: int, member: str | None, depth: int) -> str:
    try:
        members = read_zip_members(data, size)
    except ContainerError as error:
        sink.problem("unreadable", f"zip archive: {error}", member)
        return "zip"
    for entry in members:
        label = _join(member, entry.name)
        if sink.members_left <= 0:
            sink.problem("container", f"more than {MAX_MEMBERS_PER_FILE} archive members; the rest was not scanned", label)
            break
        sink.members_left -= 1
        try:
            body = read_zip_member(data, entry, sink.decompress_budget_bytes)
            if entry.method != 0:
                sink.decompress_budget_bytes -= len(body)
        except ContainerError as error:
            sink.problem("unreadable", f"zip member cannot be read: {error}", label)
            continue
        # torch.load and numpy.load unpickle `.pkl` members whole; any other member is sniffed.
        loaded = entry.name.lower().endswith(".pkl")
        _scan_blob(sink, body, len(body), label, depth + 1, _ALWAYS if loaded else _SNIFF)
    names = [entry.name for entry in members]
    if any(name.endswith("data.pkl") for name in names):
        return "pytorch-zip"
    if names and all(name.endswith(".npy") for name in names):
        return "numpy-npz"
    return "zip"


def _scan_npy(sink: _Collector, data, size: int, member: str | None) -> str:
    try:
        header = read_npy_header(data[: min(size, 1 << 20)])
    except ContainerError as error:
        sink.problem("unreadable", f"npy header: {error}", member)
        return "numpy-npy"
    if header.has_objects:  # numpy.save pickles object arrays right after the header (numpy/lib/format.py)
        _scan_streams(sink, data, header.data_offset, size, member, strict_first=True)
    return "numpy-npy"


def scan_bytes(data, *, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> tuple[str, _Collector]:
    """Scans an in-memory file; returns its format and what was found (used by scan_file and tests)."""
    sink = _Collector(max_decompressed_bytes)
    file_format = _scan_blob(sink, data, len(data), None, 0, _PROTO)
    return file_format, sink


def scan_file(path: str | os.PathLike[str], *, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> FileReport:
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
        return FileReport(str(target), "unknown", "error", 0, seconds=time.perf_counter() - started,
                          error=f"cannot read: {error.strerror or error}")
    return FileReport(
        path=str(target),
        format=file_format,
        verdict="unsafe" if sink.findings else "safe",
        size_bytes=size,
        findings=sink.findings,
        globals=sorted(sink.globals),
        pickle_streams=sink.streams,
        seconds=time.perf_counter() - started,
    )


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Every regular file under `paths` (directories recursively, sorted; symlinked folders not followed)."""
    for path in paths:
        target = Path(path)
        if not target.exists():
            raise NotFoundError(f"{target} does not exist")
        if target.is_dir():
            for root, folders, files in os.walk(target):
                folders.sort()
                for name in sorted(files):
                    candidate = Path(root) / name
                    if candidate.is_file():
                        yield candidate
        else:
            yield target


def scan_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    on_file: Callable[[Path], None] | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> ScanReport:
    """Scans files and directories (recursively); `on_file` is called before each file (progress)."""
    reports = []
    for file_path in list(iter_files(paths)):
        if on_file:
            on_file(file_path)
        reports.append(scan_file(file_path, max_decompressed_bytes=max_decompressed_bytes))
    return ScanReport(reports)


def scan_path(path: str | os.PathLike[str]) -> ScanReport:
    """Scans one file or directory; the entry point `lmforge inspect` uses for its safety verdict."""
    return scan_paths([path])
