"""convert --to merged: a LoRA adapter folded into its base gives the same outputs as base + adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lmforge.errors import UnsafeFileError, UserInputError
from lmforge.files.convert import convert
from tests.files.corpus import os_system


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """A LoRA adapter with non-zero B (init_lora_weights=False) so merging changes the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    path = tmp_path_factory.mktemp("adapter")
    get_peft_model(base, config).save_pretrained(path)
    return path


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_model_matches_base_plus_adapter(tmp_path, tiny_llama_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    report = convert(adapter_dir, tmp_path / "merged", progress=False)

    merged_dir = tmp_path / "merged"
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    assert report.to == "merged" and report.checks["max_abs_logit_difference"] < 1e-4
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), adapter_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    torch.testing.assert_close(_logits(merged, ids), _logits(unmerged, ids), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(_logits(merged, ids), _logits(base, ids), atol=1e-3)


def test_base_as_source_with_adapter_option(tmp_path, tiny_llama_dir, adapter_dir):
    report = convert(tiny_llama_dir, tmp_path / "merged", adapter=adapter_dir, progress=False)
    assert report.checks["adapter"] == str(adapter_dir) and (tmp_path / "merged" / "config.json").is_file()


def test_quantized_base_is_refused_before_loading(tmp_path, tiny_llama_dir, adapter_dir):
    base = tmp_path / "quantized"
    shutil.copytree(tiny_llama_dir, base)
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(config))

    with pytest.raises(UserInputError, match="bitsandbytes-quantized.*dequantize the base first"):
        convert(base, tmp_path / "merged", adapter=adapter_dir, progress=False)
    assert not (tmp_path / "merged").exists()


def test_a_model_folder_is_not_an_adapter(tmp_path, tiny_llama_dir):
    with pytest.raises(UserInputError, match="not a LoRA adapter"):
        convert(tiny_llama_dir, tmp_path / "merged", to="merged", progress=False)


def test_a_pickle_adapter_passes_the_scanner_before_peft_loads_it(tmp_path, tiny_llama_dir, adapter_dir):
    adapter = tmp_path / "evil-adapter"
    adapter.mkdir()
    shutil.copy(adapter_dir / "adapter_config.json", adapter / "adapter_config.json")
    canary = tmp_path / "canary"
    (adapter / "adapter_model.bin").write_bytes(os_system(canary, protocol=2))

    with pytest.raises(UnsafeFileError, match="adapter_model.bin"):
        convert(tiny_llama_dir, tmp_path / "merged", adapter=adapter, progress=False)

    assert not canary.exists()
    assert not (tmp_path / "merged").exists()


def test_what_was_saved_is_read_back_before_the_folder_appears(tmp_path, adapter_dir, monkeypatch):
    """The check compares the files on disk, not only the model in memory: a save that loses the merge is refused."""
    from transformers import PreTrainedModel

    from lmforge.errors import FormatError

    real_save = PreTrainedModel.save_pretrained

    def save_without_the_adapter(self, folder, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_save(self, folder, *args, **kwargs)
        state = {name: tensor * 0 if "down_proj" in name else tensor for name, tensor in self.state_dict().items()}
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_without_the_adapter)
    with pytest.raises(FormatError, match="saved merged model's outputs differ"):
        convert(adapter_dir, tmp_path / "merged", progress=False)
    assert not (tmp_path / "merged").exists()
