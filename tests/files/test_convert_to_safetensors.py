"""convert to safetensors: pickle checkpoints in, safetensors out, scanned first, read back, atomic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lmforge.errors import NotFoundError, UnsafeFileError, UserInputError
from lmforge.files.convert import convert_model, parse_size_bytes
from tests.files.corpus import os_system


@pytest.fixture(scope="module")
def tied_llama():
    """A tiny Llama whose lm_head shares the embedding's storage (tie_word_embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def pickle_folder(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    """An HF folder as older transformers wrote it: pytorch_model.bin beside config and tokenizer."""
    from safetensors.torch import load_file as load

    folder = tmp_path / "pickle-model"
    folder.mkdir()
    for path in tiny_llama_dir.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, folder / path.name)
    torch.save(load(tiny_llama_dir / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def test_tied_weights_are_written_once_and_recorded_as_an_alias(tmp_path, tied_llama):
    state = tied_llama.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    torch.save(state, tmp_path / "model.pt")

    report = convert_model(tmp_path / "model.pt", tmp_path / "model.safetensors", progress=False)

    assert report.aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    read = load_file(tmp_path / "model.safetensors")
    assert set(read) == set(state) - {"lm_head.weight"}
    for name, tensor in read.items():
        assert torch.equal(tensor, state[name]), name
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "pt" and metadata["lmforge.source"] == "model.pt"
    assert metadata["lm_head.weight"] == "model.embed_tokens.weight"


def test_hf_pickle_folder_becomes_a_loadable_safetensors_folder(tmp_path, pickle_folder, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    report = convert_model(pickle_folder, tmp_path / "out", progress=False)

    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert {"config.json", "tokenizer.json"} <= set(report.copied)
    assert not (tmp_path / "out" / "pytorch_model.bin").exists()
    ids = torch.tensor([[1, 5, 9, 20]])
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    converted = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(original(ids).logits, converted(ids).logits)


def test_shards_with_an_index_at_the_size_limit(tmp_path, pickle_folder):
    from transformers import AutoModelForCausalLM

    limit = 100_000
    report = convert_model(pickle_folder, tmp_path / "sharded", shard_size=limit, progress=False)

    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shards = sorted((tmp_path / "sharded").glob("model-*-of-*.safetensors"))
    assert len(shards) == report.checks["shards"] > 1
    assert set(index["weight_map"].values()) == {path.name for path in shards}
    state = torch.load(pickle_folder / "pytorch_model.bin", weights_only=True)
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    for shard in shards:
        tensors = load_file(shard)
        assert len(tensors) == 1 or sum(t.numel() * t.element_size() for t in tensors.values()) <= limit
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "sharded") is not None


def test_one_file_destination_refuses_to_shard(tmp_path, pickle_folder):
    with pytest.raises(UserInputError, match="give a folder"):
        convert_model(
            pickle_folder / "pytorch_model.bin", tmp_path / "one.safetensors", shard_size="10KB", progress=False
        )
    assert not (tmp_path / "one.safetensors").exists()


def test_legacy_format_and_nested_checkpoint(tmp_path):
    weights = {"layer.weight": torch.randn(4, 3), "layer.bias": torch.randn(4)}
    torch.save(
        {"model": weights, "epoch": 7, "optimizer": {"lr": 0.1}},
        tmp_path / "legacy.pth",
        _use_new_zipfile_serialization=False,
    )

    report = convert_model(tmp_path / "legacy.pth", tmp_path / "legacy.safetensors", progress=False)

    assert sorted(report.skipped) == ["epoch", "optimizer"]
    read = load_file(tmp_path / "legacy.safetensors")
    assert read.keys() == weights.keys() and all(torch.equal(read[k], weights[k]) for k in weights)


def test_partial_views_of_one_storage_are_saved_separately(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    torch.save({"first": base[:6].view(2, 3), "second": base[6:]}, tmp_path / "views.pt")

    report = convert_model(tmp_path / "views.pt", tmp_path / "views.safetensors", progress=False)

    assert report.aliases == {}
    read = load_file(tmp_path / "views.safetensors")
    assert torch.equal(read["first"], base[:6].view(2, 3)) and torch.equal(read["second"], base[6:])


def test_unsafe_pickle_is_refused_and_nothing_is_written(tmp_path):
    canary = tmp_path / "canary"
    (tmp_path / "evil.pt").write_bytes(os_system(canary, protocol=2))

    with pytest.raises(UnsafeFileError, match="system"):
        convert_model(tmp_path / "evil.pt", tmp_path / "out", progress=False)

    assert not canary.exists()
    assert not (tmp_path / "out").exists()


def test_a_failure_while_writing_leaves_no_destination_and_keeps_an_old_one(tmp_path, pickle_folder, monkeypatch):
    import safetensors.torch

    real_save = safetensors.torch.save_file
    calls = []

    def fail_on_second_shard(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError("disk full")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", fail_on_second_shard)
    with pytest.raises(OSError, match="disk full"):
        convert_model(pickle_folder, tmp_path / "new", shard_size="100KB", progress=False)
    assert not (tmp_path / "new").exists()

    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("previous export")
    calls.clear()
    with pytest.raises(OSError):
        convert_model(pickle_folder, old, shard_size="100KB", progress=False)
    assert [path.name for path in old.iterdir()] == ["keep.txt"]
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("text", "size"), [("5GB", 5 * 10**9), ("500MiB", 500 * 2**20), ("1.5KB", 1500), ("123", 123), (4096, 4096)]
)
def test_shard_sizes_read_like_transformers(text, size):
    assert parse_size_bytes(text) == size


@pytest.mark.parametrize("text", ["five", "0", "-1GB", "3XB"])
def test_bad_shard_size_is_a_user_error(text):
    with pytest.raises(UserInputError):
        parse_size_bytes(text)


def test_a_missing_source_is_named_and_never_taken_for_a_hub_id(tmp_path: Path):
    """convert_model reads this machine only: a hub id or a run is resolved by lmforge.hub.locate_model first."""
    with pytest.raises(NotFoundError, match="acme/model does not exist"):
        convert_model("acme/model", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
