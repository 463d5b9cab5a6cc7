import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lmforge.errors import FormatError, NotFoundError
from lmforge.files.detect import detect_format


def test_safetensors_is_detected_by_bytes_not_name(small_safetensors: Path):
    assert small_safetensors.suffix == ".bin"
    assert detect_format(small_safetensors) == "safetensors"


def test_gguf(small_gguf: Path):
    assert detect_format(small_gguf) == "gguf"


def test_torch_zip_and_legacy(torch_checkpoints: dict[str, Path]):
    assert detect_format(torch_checkpoints["zip"]) == "torch-zip"
    assert detect_format(torch_checkpoints["legacy"]) == "torch-legacy"


def test_torch_zip_under_any_folder_name(torch_checkpoints: dict[str, Path], tmp_path: Path):
    renamed = tmp_path / "odd.bin"
    with zipfile.ZipFile(torch_checkpoints["zip"]) as source, zipfile.ZipFile(renamed, "w") as target:
        for info in source.infolist():
            target.writestr("weird_folder/" + info.filename.split("/", 1)[1], source.read(info))
    assert detect_format(renamed) == "torch-zip"


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_raw_pickles_of_every_protocol(tmp_path: Path, protocol: int):
    path = tmp_path / "x.dat"
    path.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=protocol))
    assert detect_format(path) == "pickle"


def test_numpy_files(tmp_path: Path):
    np.save(tmp_path / "a.npy", np.ones(3))
    np.savez(tmp_path / "b.npz", x=np.ones(2))
    assert detect_format(tmp_path / "a.npy") == "npy"
    assert detect_format(tmp_path / "b.npz") == "npz"


def test_onnx(tiny_onnx: Path):
    assert detect_format(tiny_onnx) == "onnx"


def test_folders_and_shard_index(sharded_moe_dir: Path, peft_adapter_dir: Path, minilm_dir: Path):
    assert detect_format(minilm_dir) == "hf-model-dir"
    assert detect_format(sharded_moe_dir) == "hf-model-dir"
    assert detect_format(sharded_moe_dir / "model.safetensors.index.json") == "safetensors-sharded"
    assert detect_format(peft_adapter_dir) == "peft-adapter-dir"


@pytest.mark.parametrize(
    ("head", "expected"),
    [(b"\x1f\x8b\x08\0", "gzip"), (b"7z\xbc\xaf\x27\x1c\0\x04", "7z"), (b"\x89HDF\r\n\x1a\n", "hdf5")],
)
def test_archives_are_named_not_guessed(tmp_path: Path, head: bytes, expected: str):
    path = tmp_path / "model.bin"
    path.write_bytes(head + b"\0" * 32)
    assert detect_format(path) == expected


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "the file is empty"),
        (b"<!DOCTYPE html><html>", "HTML"),
        (b"version https://git-lfs.github.com/spec/v1\n", "git lfs pull"),
        (b"\xde\xad\xbe\xef" * 4, "de ad be ef"),
    ],
)
def test_unknown_bytes_are_described(tmp_path: Path, content: bytes, says: str):
    path = tmp_path / "mystery.bin"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=says):
        detect_format(path)


def test_missing_path_and_plain_folder(tmp_path: Path):
    with pytest.raises(NotFoundError):
        detect_format(tmp_path / "missing")
    with pytest.raises(FormatError, match="config.json"):
        detect_format(tmp_path)


def test_torchscript_archive(tmp_path: Path):
    import torch

    traced = torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    traced.save(str(tmp_path / "scripted.pt"))
    assert detect_format(tmp_path / "scripted.pt") == "torchscript"
