"""Permissive zip reading, decompression caps, npy headers, magic-byte detection."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile

import numpy
import pytest

from lmforge.files.containers import (
    ContainerError,
    decompress_stream,
    detect_kind,
    read_npy_header,
    read_zip_member,
    read_zip_members,
)
from tests.files import corpus


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return out.getvalue()


def test_zip_members_are_read_stored_and_deflated():
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        data = _zip({"a/data.pkl": b"hello" * 100, "b": b"x"}, compression)
        members = read_zip_members(data)
        assert [m.name for m in members] == ["a/data.pkl", "b"]
        assert bytes(read_zip_member(data, members[0])) == b"hello" * 100


def test_zip_with_bad_crc_and_different_local_name_is_still_read():
    data = corpus.zip_with_bad_crc_and_renamed_local_header(b"payload")
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(data)).read("model/data.pkl")  # the standard library refuses it
    members = read_zip_members(data)
    assert members[0].name == "model/data.pkl" and bytes(read_zip_member(data, members[0])) == b"payload"


def test_zip_with_junk_prepended_is_read():
    data = b"JUNK" * 10 + _zip({"x/data.pkl": b"abc"})
    members = read_zip_members(data)
    assert bytes(read_zip_member(data, members[0])) == b"abc"


def test_zip64_archive_is_read():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", allowZip64=True) as archive:
        with archive.open("big/data.pkl", "w", force_zip64=True) as handle:
            handle.write(b"z" * 10)
    data = out.getvalue()
    assert bytes(read_zip_member(data, read_zip_members(data)[0])) == b"z" * 10


def test_zip_without_central_directory_falls_back_to_local_headers_and_says_so():
    data = _zip({"a/data.pkl": b"abc"})
    truncated = data[: data.find(b"PK\x01\x02")]
    members = read_zip_members(truncated)
    assert bytes(read_zip_member(truncated, members[0])) == b"abc"
    assert members[-1].problem and "central directory" in members[-1].problem


def test_member_past_the_end_is_a_problem_not_a_crash():
    data = _zip({"a": b"x" * 50})
    central = data.find(b"PK\x01\x02")
    broken = bytearray(data)
    broken[central + 20 : central + 24] = struct.pack("<I", 10**6)  # compressed size far past the end
    member = read_zip_members(bytes(broken))[0]
    assert member.problem
    with pytest.raises(ContainerError):
        read_zip_member(bytes(broken), member)


def test_decompression_is_capped():
    bomb = gzip.compress(b"\x00" * 100_000)
    with pytest.raises(ContainerError, match="more than"):
        decompress_stream("gzip", bomb, max_bytes=1000)
    assert decompress_stream("gzip", bomb) == b"\x00" * 100_000


def test_every_gzip_member_is_decompressed_with_zero_padding_between():
    data = gzip.compress(b"first") + b"\x00" * 8 + gzip.compress(b"second")
    assert decompress_stream("gzip", data) == b"firstsecond"
    with pytest.raises(ContainerError, match="truncated"):
        decompress_stream("gzip", gzip.compress(b"x" * 1000)[:-12])


def test_npy_header_tells_object_arrays_apart():
    buffer = io.BytesIO()
    numpy.save(buffer, numpy.zeros(3, dtype=[("Offset", "<f4"), ("b", "<i8")]))
    assert not read_npy_header(buffer.getvalue()).has_objects
    assert read_npy_header(corpus.npy_object_array(1)).has_objects
    with pytest.raises(ContainerError):
        read_npy_header(b"\x93NUMPY\x01\x00\x05\x00{'de")


@pytest.mark.parametrize(
    ("head", "kind"),
    [(b"PK\x03\x04", "zip"), (b"\x1f\x8b\x08", "gzip"), (b"BZh9", "bz2"), (b"\xfd7zXZ\x00", "xz"),
     (b"7z\xbc\xaf\x27\x1c", "7z"), (b"\x93NUMPY", "npy"), (b"GGUF\x03\x00", "gguf"),
     (struct.pack("<Q", 2) + b"{}", "safetensors"), (b"\x80\x04\x95", "pickle"), (b"cos\nsystem\n", "unknown")],
)
def test_detect_kind_goes_by_bytes(head, kind):
    assert detect_kind(head, 1000) == kind


def test_a_fake_end_record_in_the_zip_comment_does_not_hide_the_real_members():
    fake_empty_archive = b"PK\x05\x06" + b"\x00" * 18
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", b"payload")
        archive.comment = fake_empty_archive
    names = [member.name for member in read_zip_members(out.getvalue())]
    assert names == ["archive/data.pkl"]


def test_npy_header_written_by_python2_with_long_suffixes_is_read():
    header = b"{'descr': '<i8', 'fortran_order': False, 'shape': (2L,), }"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 16
    assert read_npy_header(data).descr == "<i8"
