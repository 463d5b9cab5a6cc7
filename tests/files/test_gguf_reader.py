import re
import struct
from pathlib import Path

import pytest

from lmforge.errors import FormatError
from lmforge.files.gguf_reader import ArraySummary, read_gguf_header


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def _kv_u32(key: str, value: int) -> bytes:
    return _string(key) + struct.pack("<II", 4, value)


def _tensor(name: str | bytes, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    return (
        _string(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def build_gguf(kvs: list[bytes] = (), tensors: list[bytes] = (), data_bytes: int = 0, version: int = 3,
               magic: bytes = b"GGUF", tensor_count: int | None = None, kv_count: int | None = None) -> bytes:  # fmt: skip
    """A GGUF file from raw key/value and tensor-info records, padded to 32 and followed by zeros."""
    body = magic + struct.pack("<IQQ", version, len(tensors) if tensor_count is None else tensor_count,
                               len(kvs) if kv_count is None else kv_count)  # fmt: skip
    body += b"".join(kvs) + b"".join(tensors)
    body += b"\0" * (-len(body) % 32)
    return body + b"\0" * data_bytes


def test_reads_a_file_written_by_gguf_writer_like_gguf_reader(small_gguf: Path):
    import gguf

    header = read_gguf_header(small_gguf)
    reference = gguf.GGUFReader(small_gguf)
    assert header.version == 3
    assert [t.name for t in header.tensors] == [t.name for t in reference.tensors]
    for ours, theirs in zip(header.tensors, reference.tensors, strict=True):
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.ggml_type == theirs.tensor_type.name
        assert ours.size_bytes == theirs.n_bytes
        assert header.data_start_byte + ours.data_offset_byte == theirs.data_offset
    assert header.metadata["general.architecture"] == "llama"
    assert header.metadata["llama.context_length"] == 256
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, ArraySummary) and tokens.length == 300 and tokens.preview[:2] == ["tok0", "tok1"]
    q8 = next(t for t in header.tensors if t.ggml_type == "Q8_0")
    assert q8.bits_per_weight == 8.5  # 34 bytes per 32 weights


def test_a_minimal_hand_built_file_is_valid(tmp_path: Path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(build_gguf([_kv_u32("general.alignment", 32)], [_tensor("w", [8, 2])], data_bytes=64))
    header = read_gguf_header(path)
    assert header.tensors[0].shape == (8, 2) and header.tensors[0].size_bytes == 64 and header.alignment == 32


HOSTILE = {
    "bad magic": build_gguf(magic=b"GGUX"),
    "version 1 is obsolete": build_gguf(version=1),
    "big-endian": build_gguf(version=3 << 24),
    "unsupported GGUF version 7": build_gguf(version=7),
    "more than the": build_gguf(tensor_count=2**60),
    "over the 65535-byte limit": build_gguf([_string("k" * 70_000) + struct.pack("<II", 4, 1)]),
    "unknown value type 13": build_gguf([_string("k") + struct.pack("<I", 13) + b"\0" * 16]),
    "unknown item type 42": build_gguf([_string("k") + struct.pack("<IIQ", 9, 42, 1) + b"\0" * 8]),
    "array 'k' of 1152921504606846976": build_gguf([_string("k") + struct.pack("<IIQ", 9, 4, 2**60)]),
    "at most 4": build_gguf(tensors=[_tensor("w", [1, 1, 1, 1, 1])], data_bytes=64),
    "unknown ggml quant type 99": build_gguf(tensors=[_tensor("w", [32], 99)], data_bytes=64),
    "positive power of two": build_gguf([_kv_u32("general.alignment", 3)], [_tensor("w", [1])], data_bytes=64),
    "runs past the end": build_gguf(tensors=[_tensor("w", [1000])], data_bytes=64),
    "not aligned": build_gguf(tensors=[_tensor("w", [1], offset=4)], data_bytes=64),
    "duplicate metadata key": build_gguf([_kv_u32("a", 1), _kv_u32("a", 2)]),
    "duplicate tensor name": build_gguf(tensors=[_tensor("w", [1]), _tensor("w", [1], offset=32)], data_bytes=64),
    "over the 63-byte limit": build_gguf(tensors=[_tensor("w" * 64, [1])], data_bytes=64),
    "not a multiple of the Q8_0 block size": build_gguf(tensors=[_tensor("w", [33], 8)], data_bytes=64),
    "overflows 64 bits": build_gguf(tensors=[_tensor("w", [2**40, 2**40])], data_bytes=64),
    "overlaps": build_gguf(tensors=[_tensor("a", [16]), _tensor("b", [16], offset=32)], data_bytes=128),
    "not valid UTF-8": build_gguf([_string(b"\xff\xfe") + struct.pack("<II", 4, 1)]),
    "shorter than a GGUF header": b"GGUF\x03\0\0\0",
    "the file ends first": build_gguf([_string("key") + struct.pack("<I", 8) + struct.pack("<Q", 10**6) + b"abc"])[:40],
}


@pytest.mark.parametrize("problem", sorted(HOSTILE))
def test_hostile_files_raise_a_format_error_naming_the_problem(tmp_path: Path, problem: str):
    path = tmp_path / "bad.gguf"
    path.write_bytes(HOSTILE[problem])
    with pytest.raises(FormatError, match=re.escape(problem)) as error:
        read_gguf_header(path)
    assert str(error.value).startswith("bad.gguf: ")


def test_truncated_writer_output_is_rejected(small_gguf: Path, tmp_path: Path):
    data = small_gguf.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(FormatError, match="runs past the end"):
        read_gguf_header(path)
