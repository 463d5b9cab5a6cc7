"""convert --to merged: a LoRA adapter folded into its base gives the same outputs as base + adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lmforge.errors import UnsafeFileError, UserInputError
from lmforge.files.convert import convert_model
from tests.files.corpus import os_system


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """A LoRA adapter with non-zero B (init_lora_weights=False) so merging changes the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    path = tmp_path_factory.mktemp("adapter")
    get_peft_model(base, config).save_pretrained(path)
    return path


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_model_matches_base_plus_adapter(tmp_path, tiny_llama_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    report = convert_model(adapter_dir, tmp_path / "merged", progress=False)

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
    report = convert_model(tiny_llama_dir, tmp_path / "merged", adapter=adapter_dir, progress=False)
    assert report.checks["adapter"] == str(adapter_dir) and (tmp_path / "merged" / "config.json").is_file()


def test_quantized_base_is_refused_before_loading(tmp_path, tiny_llama_dir, adapter_dir):
    base = tmp_path / "quantized"
    shutil.copytree(tiny_llama_dir, base)
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(config))

    with pytest.raises(UserInputError, match="bitsandbytes-quantized.*dequantize the base first"):
        convert_model(base, tmp_path / "merged", adapter=adapter_dir, progress=False)
    assert not (tmp_path / "merged").exists()


def test_a_model_folder_is_not_an_adapter(tmp_path, tiny_llama_dir):
    with pytest.raises(UserInputError, match="not a LoRA adapter"):
        convert_model(tiny_llama_dir, tmp_path / "merged", to="merged", progress=False)


def test_a_pickle_adapter_passes_the_scanner_before_peft_loads_it(tmp_path, tiny_llama_dir, adapter_dir):
    adapter = tmp_path / "evil-adapter"
    adapter.mkdir()
    shutil.copy(adapter_dir / "adapter_config.json", adapter / "adapter_config.json")
    canary = tmp_path / "canary"
    (adapter / "adapter_model.bin").write_bytes(os_system(canary, protocol=2))

    with pytest.raises(UnsafeFileError, match="adapter_model.bin"):
        convert_model(tiny_llama_dir, tmp_path / "merged", adapter=adapter, progress=False)

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

        save_file(
            {k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"}
        )

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_without_the_adapter)
    with pytest.raises(FormatError, match="saved merged model's outputs differ"):
        convert_model(adapter_dir, tmp_path / "merged", progress=False)
    assert not (tmp_path / "merged").exists()


@pytest.fixture
def lora_run(tmp_path, tiny_llama_dir, adapter_dir) -> Path:
    """An lmforge SFT LoRA run folder (final/ = the adapter) on a base that carries a pretrain run's card."""
    import yaml

    base = tmp_path / "pretrain-final"
    shutil.copytree(tiny_llama_dir, base)
    (base / "README.md").write_text(
        "# pretrain\n\nTrained with `lmforge train` (stage **pretrain**, method **full**).\n"
    )
    run = tmp_path / "sft-run"
    shutil.copytree(adapter_dir, run / "final")
    adapter_config = json.loads((run / "final" / "adapter_config.json").read_text())
    (run / "final" / "adapter_config.json").write_text(
        json.dumps({**adapter_config, "base_model_name_or_path": str(base)})
    )
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "stage": "sft",
                "method": {"name": "lora"},
                "data": {"train": "builtin:arith-sft"},
                "train": {"learning_rate": 0.001},
            }
        )
    )
    (run / "result.json").write_text(
        json.dumps(
            {
                "steps": 30,
                "final_metrics": {"train_loss": 1.25},
                "diagnosis": {"verdict": "good fit", "reason": "loss fell"},
            }
        )
    )
    return run


def test_a_merged_run_carries_its_own_card_not_the_bases(tmp_path, lora_run):
    """`convert RUN/final merged/` used to copy the base's README ("stage pretrain, method full")."""
    convert_model(lora_run / "final", tmp_path / "merged", progress=False)
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "stage **pretrain**" not in card and "(merged)" in card
    assert f"Base model: {(tmp_path / 'pretrain-final').resolve()}" in card
    assert f"Adapter: {(lora_run / 'final').resolve()} (LORA, r 4, alpha 8" in card
    assert "stage sft, method lora, data builtin:arith-sft, 30 steps at learning rate 0.001" in card
    assert "| train_loss | 1.25 |" in card and "Diagnosis: good fit: loss fell" in card


def test_convert_takes_a_run_folder_and_merges_an_adapter_before_gguf(tmp_path, lora_run):
    from typer.testing import CliRunner

    from lmforge.cli.main import app
    from lmforge.files.gguf_reader import read_gguf_header

    # `lmforge convert RUN`: the run folder stands for RUN/final (lmforge.hub.locate_model resolves it).
    result = CliRunner().invoke(app, ["convert", str(lora_run), str(tmp_path / "merged"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["to"] == "merged" and (tmp_path / "merged" / "model.safetensors").is_file()
    gguf = convert_model(lora_run / "final", tmp_path / "model.gguf", quant="f16", progress=False)
    assert gguf.to == "gguf" and "is a LoRA adapter: merged into its base" in gguf.notes[0]
    assert gguf.checks["max_abs_logit_difference"] < 1e-4
    assert read_gguf_header(tmp_path / "model.gguf").tensors
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".lmforge-merge-")] == []
