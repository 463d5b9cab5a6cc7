"""convert to ONNX: onnxruntime outputs match PyTorch on inputs unlike the export's."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from lmforge.errors import UnsafeFileError, UserInputError
from lmforge.files.convert import convert_model
from tests.files.corpus import os_system


def _run(path, feeds):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.numpy() for name, value in feeds.items()})[0]


def test_tiny_llama_logits_match_pytorch_for_any_batch_and_length(tmp_path, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    report = convert_model(tiny_llama_dir, tmp_path / "llama.onnx", progress=False)

    assert report.to == "onnx" and report.checks["max_abs_difference"] < 1e-3
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    for batch, length in ((1, 3), (4, 17)):
        ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(batch))
        feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        with torch.no_grad():
            expected = model(**feeds).logits.numpy()
        np.testing.assert_allclose(_run(tmp_path / "llama.onnx", feeds), expected, atol=1e-4)


@pytest.fixture(scope="module")
def minilm_first_layer_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir):
    """The real MiniLM cut to its first layer (same weights, tokenizer, config otherwise): BERT's export
    path in a third of the time of all six layers (the full model is measured in docs/convert.md)."""
    import shutil

    from transformers import AutoModel

    model = AutoModel.from_pretrained(minilm_dir)
    model.encoder.layer = model.encoder.layer[:1]
    model.config.num_hidden_layers = 1
    path = tmp_path_factory.mktemp("minilm-1-layer")
    model.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, path / name)
    return path


def test_real_minilm_bert_to_a_folder_with_its_tokenizer(tmp_path, minilm_first_layer_dir):
    from transformers import AutoModel, AutoTokenizer

    minilm_dir = minilm_first_layer_dir
    report = convert_model(minilm_dir, tmp_path / "minilm", to="onnx", progress=False)

    assert (tmp_path / "minilm" / "model.onnx").is_file() and "tokenizer.json" in report.copied
    assert report.checks["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "minilm")
    feeds = dict(
        tokenizer(
            ["lmforge converts models", "a second, longer sentence to pad the first"], padding=True, return_tensors="pt"
        )
    )
    with torch.no_grad():
        expected = AutoModel.from_pretrained(minilm_dir).eval()(**feeds).last_hidden_state.numpy()
    kept = feeds["attention_mask"].numpy().astype(bool)
    np.testing.assert_allclose(_run(tmp_path / "minilm" / "model.onnx", feeds)[kept], expected[kept], atol=1e-4)


def test_a_file_without_a_config_is_refused(tmp_path, tiny_llama_dir):
    with pytest.raises(UserInputError, match="config.json"):
        convert_model(tiny_llama_dir / "model.safetensors", tmp_path / "model.onnx", progress=False)


def test_pickle_weights_pass_the_scanner_before_transformers_loads_them(tmp_path, tiny_llama_dir):
    folder = tmp_path / "evil-model"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_llama_dir / "config.json").read_bytes())
    canary = tmp_path / "canary"
    (folder / "pytorch_model.bin").write_bytes(os_system(canary, protocol=2))

    with pytest.raises(UnsafeFileError, match="pytorch_model.bin"):
        convert_model(folder, tmp_path / "model.onnx", progress=False)

    assert not canary.exists()
    assert not (tmp_path / "model.onnx").exists()
