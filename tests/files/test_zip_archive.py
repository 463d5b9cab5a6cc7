"""Zip layout: what real writers produce is clean; every structural ambiguity is named; and, as
a property, no perturbed archive hides a member that zipfile or torch's reader would hand a loader."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.files.scan import scan_bytes
from lmforge.files.zip_archive import looks_like_zip, read_zip_layout
from tests.files import attacks


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return out.getvalue()


class _Unseekable(io.RawIOBase):
    """A pipe-like sink: zipfile then writes data descriptors after every member."""

    def __init__(self) -> None:
        self.written = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.written += chunk
        return len(chunk)


def _real_archives() -> dict[str, bytes]:
    archives = {
        f"zipfile method {method}": _zip({"a/data.pkl": b"hello" * 100, "b/": b"", "c": b"x"}, method)
        for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
    }
    forced = io.BytesIO()
    with zipfile.ZipFile(forced, "w") as archive, archive.open("big/data.pkl", "w", force_zip64=True) as handle:
        handle.write(b"z" * 10)
    archives["zipfile ZIP64"] = forced.getvalue()
    pipe = _Unseekable()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x", b"abc" * 100)
        with archive.open("w64", "w", force_zip64=True) as handle:
            handle.write(b"r" * 10)
    archives["zipfile to a pipe (data descriptors)"] = bytes(pipe.written)
    for name, save in (("numpy.savez", numpy.savez), ("numpy.savez_compressed", numpy.savez_compressed)):
        buffer = io.BytesIO()
        save(buffer, a=numpy.arange(300), b=numpy.ones((2, 2)))
        archives[name] = buffer.getvalue()
    for name, save in (("torch.save", torch.save), ("torch.jit.save", torch.jit.save)):
        buffer = io.BytesIO()
        save(torch.jit.script(torch.nn.Linear(2, 2)) if "jit" in name else {"w": torch.ones(3)}, buffer)
        archives[name] = buffer.getvalue()
    return archives


def test_archives_real_writers_produce_have_one_reading():
    for name, data in _real_archives().items():
        layout = read_zip_layout(data, len(data))
        assert layout.problems == [], name
        listed = [(info.filename, info.header_offset) for info in zipfile.ZipFile(io.BytesIO(data)).infolist()]
        assert [(entry.name, entry.header_offset) for entry in layout.entries] == listed, name


def _problems(data: bytes) -> str:
    return " | ".join(read_zip_layout(data, len(data)).problems)


def test_each_structural_ambiguity_is_named(tmp_path):
    canary = tmp_path / "CANARY"
    plain = _zip({"archive/data.pkl": b"N.", "archive/version": b"3\n"})
    assert "ZIP64 record" in _problems(attacks.zip64_record_with_a_second_directory(canary))
    assert "counts 1 entries, the central directory holds 2" in _problems(
        attacks.npz_whose_end_record_undercounts(canary)
    )
    assert "two entries named" in _problems(attacks.duplicate_data_pkl(canary))
    assert "from where the end record puts it" in _problems(attacks.junk_offset_onto_a_harmless_directory(canary))
    assert "two entries named" in _problems(_zip({"archive/data.pkl": b"N.", "archive/DATA.PKL": b"N."}))
    assert "no member explains" in _problems(b"JUNK" + plain)
    commented = plain[:-2] + struct.pack("<H", 4) + b"note" + b"trailing"
    assert "comment ends at byte" in _problems(commented)
    renamed = bytearray(plain)
    renamed[30:37] = b"ARCHIVE"
    assert "the local header names it" in _problems(bytes(renamed))


def test_a_zip_behind_a_prefix_is_still_a_zip_for_the_scanner():
    """zipfile opens a zip behind any prefix (it corrects the offsets); miniz when the offsets count it."""
    inner = _zip({"archive/data.pkl": b"N."})
    assert looks_like_zip(inner, len(inner)) and looks_like_zip(b"PREFIX" + inner, len(inner) + 6)
    _, sink = scan_bytes(b"PREFIX" + inner)
    assert "no member explains" in " ".join(finding.message for finding in sink.findings)
    assert not looks_like_zip(bytes(range(256)) * 64, 256 * 64)


# ---- the property -------------------------------------------------------------------------------
_PAYLOAD = b"cos\nsystem\n(S'true'\ntR."
_BENIGN = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01K\x01s."


@st.composite
def _perturbed_archives(draw) -> bytes:
    """Members (some duplicated names, case variants, stored or deflated, payload or benign), one or
    two central directories, end records that may disagree, ZIP64 records, junk and comments."""
    names = ["archive/data.pkl", "archive/DATA.PKL", "archive/version", "archive/data/0", "x.npy"]
    count = draw(st.integers(1, 4))
    members = [
        (
            draw(st.sampled_from(names)),
            draw(st.sampled_from([_PAYLOAD, _BENIGN, b"3\n"])),
            draw(st.sampled_from([0, 8])),
        )
        for _ in range(count)
    ]
    gap = draw(st.sampled_from([b"", b"\0" * 3, _PAYLOAD]))
    body, entries = b"", []
    for member in members:
        chunk, [entry] = attacks.zip_members([member], start=len(body))
        body += chunk + (gap if draw(st.booleans()) else b"")
        entries.append(entry)
    first = draw(st.lists(st.sampled_from(entries), min_size=1, max_size=4))
    second = draw(st.lists(st.sampled_from(entries), min_size=1, max_size=4))
    first_bytes, second_bytes = attacks.zip_directory(first), attacks.zip_directory(second)
    first_at = len(body)
    second_at = first_at + len(first_bytes)
    archive = body + first_bytes + (second_bytes if draw(st.booleans()) else b"")
    classic_count = len(first) + draw(st.sampled_from([0, 0, -1, 1]))
    if draw(st.booleans()):  # a ZIP64 record, pointing at either directory
        zip64_second = draw(st.booleans())
        archive += attacks.zip64_end(
            len(second) if zip64_second else len(first),
            len(second_bytes if zip64_second else first_bytes),
            second_at if zip64_second else first_at,
            len(archive),
        )
    archive += attacks.zip_end(max(0, classic_count), len(first_bytes), first_at)
    if draw(st.booleans()):
        archive = archive[:-2] + struct.pack("<H", 22) + attacks.zip_end(0, 0, 0)  # a fake end record as comment
    prefix = draw(st.sampled_from([b"", b"", b"JUNK" * 4]))
    return prefix + archive


def _what_loaders_read(data: bytes) -> list[bytes]:
    """Every member body zipfile or torch's reader hands to a loader (CRCs not enforced, as torch)."""
    from lmforge.files.zip_archive import read_zipfile_member

    bodies = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        bodies += [read_zipfile_member(archive, info, 1 << 20)[0] for info in archive.infolist()]
    except (zipfile.BadZipFile, ValueError, NotImplementedError, EOFError, OSError):
        pass
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    except (RuntimeError, ValueError):
        return bodies
    for record in ["data.pkl", "DATA.PKL", "version", "data/0"]:
        try:
            if reader.has_record(record):
                bodies.append(bytes(reader.get_record(record)))
        except (RuntimeError, ValueError):
            pass
    return bodies


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_perturbed_archives())
def test_no_perturbed_archive_hides_a_payload_that_zipfile_or_torch_would_read(data):
    file_format, sink = scan_bytes(data)
    if any(body.startswith(_PAYLOAD) for body in _what_loaders_read(data)):
        assert sink.verdict() != "safe", (file_format, [finding.message for finding in sink.findings])


@pytest.mark.parametrize("name", ["torch.save", "numpy.savez_compressed"])
def test_a_clean_archive_scans_safe_and_one_flipped_directory_byte_never_does_silently(name):
    data = _real_archives()[name]
    assert scan_bytes(data)[1].verdict() == "safe"
    directory = data.rfind(b"PK\x01\x02")
    for offset in range(directory, directory + 46):
        broken = bytearray(data)
        broken[offset] ^= 0xFF
        _, sink = scan_bytes(bytes(broken))
        layout_problems = _layout_problems(bytes(broken))
        if layout_problems:
            assert sink.verdict() != "safe"


def _layout_problems(data: bytes) -> list[str]:
    from lmforge.files.containers import ContainerError

    try:
        return read_zip_layout(data, len(data)).problems
    except ContainerError as error:
        return [str(error)]


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_members_of_every_compression_zipfile_reads_are_walked(method):
    assert scan_bytes(_zip({"a/data.pkl": _BENIGN, "a/x": b"\0" * 100}, method))[1].verdict() == "safe"
    assert scan_bytes(_zip({"a/data.pkl": _BENIGN, "a/x": _PAYLOAD}, method))[1].verdict() == "unsafe"
    renamed = bytearray(_zip({"a/data.pkl": _PAYLOAD}, method))
    renamed[30:31] = b"b"  # zipfile refuses the member now; it is read from the layout instead
    _, sink = scan_bytes(bytes(renamed))
    assert sink.verdict() == "unsafe" and any("local header names it" in finding.message for finding in sink.findings)
