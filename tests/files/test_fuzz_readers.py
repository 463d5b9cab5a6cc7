"""Hostile input never escapes the readers as anything but FormatError (no crash, hang or huge allocation)."""

import contextlib
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.errors import FormatError
from lmforge.files.gguf_reader import read_gguf_header
from lmforge.files.safetensors_reader import read_safetensors_header

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_safetensors() -> bytes:
    header = b'{"__metadata__":{"k":"v"},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F4","shape":[4],"data_offsets":[12,14]}}'
    return struct.pack("<Q", len(header)) + header + b"\x01" * 14


def _valid_gguf() -> bytes:
    def string(text: bytes) -> bytes:
        return struct.pack("<Q", len(text)) + text

    kvs = string(b"general.architecture") + struct.pack("<I", 8) + string(b"llama")
    tokens = [bytes([97 + i]) * (i % 3 + 1) for i in range(12)]  # more than the 8 previewed: the skip path
    kvs += string(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, len(tokens)) + b"".join(map(string, tokens))
    kvs += string(b"general.alignment") + struct.pack("<II", 4, 32)
    tensors = string(b"w") + struct.pack("<IQQIQ", 2, 4, 2, 0, 0) + string(b"q") + struct.pack("<IQIQ", 1, 32, 8, 32)
    body = b"GGUF" + struct.pack("<IQQ", 3, 2, 3) + kvs + tensors
    body += b"\0" * (-len(body) % 32)
    return body + b"\x02" * 72


def _read(reader, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".bin") as handle:
        handle.write(data)
        handle.flush()
        try:
            header = reader(Path(handle.name))
        except FormatError:
            return
    # What a reader accepts is self-consistent: no tensor claims more bytes than the file holds.
    for tensor in header.tensors:
        assert 0 <= tensor.size_bytes <= len(data), (tensor.name, tensor.size_bytes, len(data))


@st.composite
def _mutated(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "set", "cut", "insert", "u64"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "u64" and len(data) >= position + 8:
            data[position : position + 8] = struct.pack("<Q", draw(st.sampled_from([0, 1, 2**31, 2**63, 2**64 - 1])))
    return bytes(data)


@pytest.mark.parametrize("reader", [read_safetensors_header, read_gguf_header], ids=["safetensors", "gguf"])
def test_valid_seeds_parse(reader):
    data = _valid_safetensors() if reader is read_safetensors_header else _valid_gguf()
    with tempfile.NamedTemporaryFile() as handle:
        handle.write(data)
        handle.flush()
        assert len(reader(Path(handle.name)).tensors) == 2


@FUZZ
@given(st.binary(max_size=512))
def test_safetensors_random_bytes(data: bytes):
    _read(read_safetensors_header, data)


@FUZZ
@given(_mutated(_valid_safetensors()))
def test_safetensors_mutated_valid_file(data: bytes):
    _read(read_safetensors_header, data)


@FUZZ
@given(st.binary(max_size=512).map(lambda tail: b"GGUF" + struct.pack("<I", 3) + tail))
def test_gguf_random_bytes_after_magic(data: bytes):
    _read(read_gguf_header, data)


@FUZZ
@given(_mutated(_valid_gguf()))
def test_gguf_mutated_valid_file(data: bytes):
    _read(read_gguf_header, data)


@pytest.fixture(scope="module")
def torch_data_pkl() -> bytes:
    """The data.pkl of a real torch.save zip: the seed the mutations start from."""
    import io
    import zipfile

    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2, 3), "b": [torch.ones(1, dtype=torch.float16)]}, buffer)
    with zipfile.ZipFile(buffer) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))


@FUZZ
@given(data=st.data())
def test_torch_pickle_walker_mutated_data_pkl(torch_data_pkl: bytes, data):
    import io

    from lmforge.files.torch_zip import tensors_from_pickle

    assert [t.name for t in tensors_from_pickle(io.BytesIO(torch_data_pkl))] == ["w", "b.0"]
    with contextlib.suppress(FormatError):
        tensors_from_pickle(io.BytesIO(data.draw(_mutated(torch_data_pkl))))
