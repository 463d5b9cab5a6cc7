import re
import struct
from pathlib import Path

import pytest
from safetensors import safe_open

from lmforge.errors import FormatError
from lmforge.files.safetensors_reader import read_safetensors_header
from tests.files.conftest import write_safetensors_raw


def _reference_rejects(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="numpy"):
            return False
    except Exception:
        return True


def test_reads_names_dtypes_shapes_and_metadata(small_safetensors: Path):
    header = read_safetensors_header(small_safetensors)
    by_name = {t.name: t for t in header.tensors}
    assert len(by_name) == 5
    assert by_name["model.layers.0.self_attn.q_proj.weight"].dtype == "BF16"
    assert by_name["model.layers.0.mlp.up_proj.weight"].shape == (16, 8)
    assert by_name["model.embed_tokens.weight"].size_bytes == 32 * 8 * 4
    assert header.metadata == {"format": "pt", "source": "test"}
    assert header.file_size_bytes == small_safetensors.stat().st_size


def test_matches_the_reference_reader_on_a_real_checkpoint(minilm_dir: Path):
    path = minilm_dir / "model.safetensors"
    header = read_safetensors_header(path)
    with safe_open(str(path), framework="numpy") as reference:
        assert sorted(t.name for t in header.tensors) == sorted(reference.keys())
        for tensor in header.tensors[:5]:
            assert list(tensor.shape) == reference.get_slice(tensor.name).get_shape()


def _entry(dtype: str, shape: list[int], start: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


HOSTILE = {
    "shorter than the 8-byte header": (None, b"\x01\x02"),
    "over the 100000000-byte limit": (None, struct.pack("<Q", 200_000_000) + b"{}"),
    "runs past the end": (None, struct.pack("<Q", 1000) + b"{}"),
    "not valid UTF-8": (None, struct.pack("<Q", 4) + b"{\xff\xfe}"),
    "not valid JSON": (None, struct.pack("<Q", 4) + b'{"a:'),
    "does not start with": (None, struct.pack("<Q", 2) + b"[]"),
    "unknown dtype": ({"a": _entry("F128", [1], 0, 16)}, b"\0" * 16),
    "not contiguous": ({"a": _entry("F32", [1], 0, 4), "b": _entry("F32", [1], 8, 12)}, b"\0" * 12),
    "overlaps the previous tensor": ({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [1], 4, 8)}, b"\0" * 8),
    "is before start": ({"a": _entry("F32", [0], 4, 0)}, b"\0" * 4),
    "overflows 64 bits": ({"a": _entry("F32", [2**40, 2**40], 0, 4)}, b"\0" * 4),
    "needs 8": ({"a": _entry("F32", [2], 0, 4)}, b"\0" * 4),
    "do not fill whole bytes": ({"a": _entry("F4", [3], 0, 2)}, b"\0" * 2),
    "truncated or trailing": ({"a": _entry("F32", [2], 0, 8)}, b"\0" * 12),
    "invalid shape": ({"a": _entry("F32", [-1], 0, 4)}, b"\0" * 4),
    "exactly the keys": ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4),
    "duplicate key": (None, b""),
}


@pytest.mark.parametrize("problem", sorted(HOSTILE))
def test_hostile_headers_raise_a_format_error_naming_the_problem(tmp_path: Path, problem: str):
    header, data = HOSTILE[problem]
    path = tmp_path / "bad.safetensors"
    if problem == "duplicate key":
        text = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
        path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 4)
    elif header is None:
        path.write_bytes(data)
    else:
        write_safetensors_raw(path, header, data)
    with pytest.raises(FormatError, match=re.escape(problem)) as error:
        read_safetensors_header(path)
    assert "bad.safetensors" in str(error.value)
    if problem != "duplicate key":  # serde keeps the last duplicate; we refuse the ambiguity
        assert _reference_rejects(path), "the reference implementation accepts what we reject"


@pytest.mark.parametrize(("dtype", "shape", "size_bytes"), [("F4", [4], 2), ("F6_E2M3", [4], 3), ("F8_E8M0", [3], 3)])
def test_sub_byte_and_new_dtypes_are_sized_like_the_reference(
    tmp_path: Path, dtype: str, shape: list[int], size_bytes: int
):
    path = write_safetensors_raw(
        tmp_path / "x.safetensors", {"t": _entry(dtype, shape, 0, size_bytes)}, b"\0" * size_bytes
    )
    (tensor,) = read_safetensors_header(path).tensors
    assert tensor.size_bytes == size_bytes and tensor.dtype == dtype
    assert not _reference_rejects(path)


def test_header_padding_with_spaces_is_accepted(tmp_path: Path):
    path = write_safetensors_raw(tmp_path / "p.safetensors", {"t": _entry("U8", [2], 0, 2)}, b"ab", header_pad=b"    ")
    assert read_safetensors_header(path).tensors[0].shape == (2,)


def test_reads_only_the_header_of_a_huge_sparse_file(tmp_path: Path):
    elements = 25 * 10**9  # 100 GB of F32, never written: a sparse file
    path = write_safetensors_raw(tmp_path / "huge.safetensors", {"w": _entry("F32", [elements], 0, 4 * elements)})
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size + 4 * elements)
    try:
        header = read_safetensors_header(path)
        assert header.tensors[0].num_params == elements
    finally:
        path.unlink()


def test_a_cut_short_file_is_called_truncated_not_unrecognised(small_safetensors: Path, tmp_path: Path):
    """The first 200 bytes of a safetensors file (an interrupted download) name the problem and both sizes."""
    from lmforge.files.detect import detect_format
    from lmforge.files.inspect import inspect_path

    (header_size,) = struct.unpack("<Q", small_safetensors.read_bytes()[:8])
    assert header_size > 192
    cut = tmp_path / "model.safetensors"
    cut.write_bytes(small_safetensors.read_bytes()[:200])
    expected = f"model.safetensors: truncated safetensors header (192 of {header_size} bytes)"
    for read in (detect_format, inspect_path):
        with pytest.raises(FormatError, match=re.escape(expected)):
            read(cut)
