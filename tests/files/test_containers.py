"""Decompression caps, npy headers read by numpy's own reader, tar read by tarfile, magic bytes."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile

import pytest

from lmforge.files.containers import (
    ContainerError,
    decompress_stream,
    detect_kind,
    is_tar,
    read_npy_header,
    read_tar_members,
)
from tests.files import attacks, corpus


def test_decompression_is_capped():
    bomb = gzip.compress(b"\x00" * 100_000)
    inner, problem = decompress_stream("gzip", bomb, max_bytes=1000)
    assert len(inner) == 1000 and "more than" in problem
    assert decompress_stream("gzip", bomb) == (b"\x00" * 100_000, None)


def test_every_gzip_member_is_decompressed_with_zero_padding_between():
    data = gzip.compress(b"first") + b"\x00" * 8 + gzip.compress(b"second")
    assert decompress_stream("gzip", data) == (b"firstsecond", None)


def test_a_truncated_gzip_still_hands_over_what_it_decompressed():
    """gzip.open streams the bytes before the cut to the unpickler, so they must be scanned too."""
    payload = b"cos\nsystem\n(S'true'\ntR." + bytes(range(256)) * 20
    inner, problem = decompress_stream("gzip", gzip.compress(payload)[:-12])
    assert problem == "compressed data is truncated" and inner.startswith(payload[:30]) and payload.startswith(inner)


@pytest.mark.parametrize(
    ("descr", "objects"),
    [
        ("'<f4'", False),
        ("'|O'", True),
        ("'object'", True),
        ("'O8'", True),
        ("[('a', '<i8'), ('b', '|O')]", True),
        ("[('a', '<i8', (2,))]", False),
        ("('|O', (2,))", True),
    ],
)
def test_npy_header_is_judged_by_numpys_own_dtype(descr, objects):
    assert read_npy_header(attacks.npy_header(descr) + b"\x00" * 64).has_objects is objects


def test_npy_headers_numpy_refuses_are_an_error_not_a_guess():
    with pytest.raises(ContainerError):
        read_npy_header(b"\x93NUMPY\x01\x00\x05\x00{'de")
    with pytest.raises(ContainerError):
        read_npy_header(attacks.npy_header("'<f4'").replace(b"\x01\x00", b"\x09\x00", 1))  # unknown version


def test_npy_header_written_by_python2_with_long_suffixes_is_read():
    header = b"{'descr': '<i8', 'fortran_order': False, 'shape': (2L,), }"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 16
    assert str(read_npy_header(data).dtype) == "int64"


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"PK\x03\x04", "zip"),
        (b"PK\x05\x06", "zip"),
        (b"\x1f\x8b\x08", "gzip"),
        (b"BZh9", "bz2"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"7z\xbc\xaf\x27\x1c", "7z"),
        (b"\x93NUMPY", "npy"),
        (b"GGUF\x03\x00", "gguf"),
        (struct.pack("<Q", 2) + b"{}", "safetensors"),
        (b"\x80\x04\x95", "pickle"),
        (b"cos\nsystem\n", "unknown"),
    ],
)
def test_detect_kind_goes_by_bytes(head, kind):
    assert detect_kind(head, 1000) == kind


def test_a_tar_is_whatever_tarfile_opens_magic_or_not():
    pax = corpus._tar_of({"pickle": b"\x80\x02K\x01."})
    old = io.BytesIO()
    with tarfile.open(fileobj=old, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("pickle")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"N.\n."))
    v7 = bytearray(old.getvalue())
    v7[257:265] = b"\0" * 8  # a pre-POSIX header: no "ustar" magic, which tarfile (and so torch.load) still reads
    v7[148:156] = b" " * 8
    v7[148:156] = f"{sum(v7[:512]):06o}\0 ".encode()
    assert is_tar(pax) and is_tar(bytes(v7)) and not is_tar(b"\x80\x02N." + b"\0" * 600)
    assert [(item.name, item.body) for item in read_tar_members(bytes(v7))] == [("pickle", b"N.\n.")]


def test_tar_links_are_problems_because_torch_extracts_and_follows_them():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        link = tarfile.TarInfo("storages")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    [item] = read_tar_members(out.getvalue())
    assert item.body is None and "link" in item.problem
