import pickle
import shutil

import pytest
import torch

from lmforge.errors import DependencyError, NotFoundError, UnsafeFileError, UserInputError
from lmforge.generate.load import load_model
from lmforge.hub.reference import locate_model


def _logits(loaded, text="Hello there"):
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return loaded.model(ids).logits


def test_a_model_folder_loads_with_its_facts(loaded, tiny_llama_dir):
    assert loaded.name == tiny_llama_dir.name
    assert loaded.context_length == 256
    assert loaded.chat_template_source == "tokenizer"
    assert loaded.tokenizer.eos_token_id in loaded.stop_token_ids
    assert loaded.render_chat([{"role": "user", "content": "hi"}]).endswith("<|im_start|>assistant\n")
    assert not loaded.model.training


def test_a_run_folder_resolves_to_final_then_to_its_newest_checkpoint(run_dir, tiny_llama_dir):
    assert locate_model(run_dir).path == run_dir / "checkpoints" / "checkpoint-10"
    shutil.copytree(tiny_llama_dir, run_dir / "final")
    assert locate_model(run_dir).path == run_dir / "final"
    loaded = load_model(str(run_dir))
    assert loaded.context_length == 256 and loaded.name == "run"


def test_an_adapter_alone_finds_its_base_and_changes_the_model(loaded, tiny_adapter_dir):
    tuned = load_model(str(tiny_adapter_dir))
    assert tuned.adapter == str(tiny_adapter_dir)
    assert not torch.allclose(_logits(tuned), _logits(loaded))
    explicit = load_model(str(loaded.model.name_or_path), adapter=str(tiny_adapter_dir))
    assert torch.allclose(_logits(explicit), _logits(tuned))
    assert "+" in explicit.name


def test_an_adapter_whose_base_is_gone_says_so(tmp_path, tiny_adapter_dir):
    import json

    moved = shutil.copytree(tiny_adapter_dir, tmp_path / "adapter")
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "deleted-base")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(NotFoundError, match="its base model .*deleted-base does not exist"):
        load_model(str(moved))


def test_adapter_option_must_name_an_adapter(tiny_llama_dir):
    with pytest.raises(UserInputError, match="not a LoRA adapter"):
        load_model(str(tiny_llama_dir), adapter=str(tiny_llama_dir))


def test_missing_and_non_model_folders_are_clear_errors(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(NotFoundError, match="no config.json"):
        load_model(str(tmp_path))


def test_pickle_weights_load_only_after_the_scanner_passes_them(tmp_path, tiny_llama_dir, loaded):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "bin-model"
    folder.mkdir()
    torch.save(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict(), folder / "pytorch_model.bin")
    shutil.copy(tiny_llama_dir / "config.json", folder / "config.json")
    loaded.tokenizer.save_pretrained(folder)
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, ("echo owned",))

    # Trainer state beside the weights is never unpickled by a load, so it does not block one.
    (folder / "training_args.bin").write_bytes(pickle.dumps(Payload()))
    assert torch.allclose(_logits(load_model(str(folder))), _logits(loaded))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeFileError, match="pytorch_model.bin"):
        load_model(str(folder))


def test_an_adapter_trained_with_added_tokens_loads_onto_its_smaller_base(tmp_path, tiny_llama_dir, loaded):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|tool|>"]})
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    base.resize_token_embeddings(len(tokenizer))
    config = LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["embed_tokens", "lm_head"])
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")

    tuned = load_model(str(tmp_path / "adapter"))
    assert tuned.model.get_input_embeddings().num_embeddings == len(tokenizer) == len(loaded.tokenizer) + 1


def test_the_base_of_a_run_an_adapter_or_an_adapter_option(run_dir, tiny_llama_dir, tiny_adapter_dir, tmp_path):
    from lmforge.generate.load import base_of

    (run_dir / "config.yaml").write_text(f"stage: sft\ninit_from: null\nmodel:\n  path: {tiny_llama_dir}\n")
    assert base_of(str(run_dir)) == str(tiny_llama_dir)
    assert base_of(str(tiny_adapter_dir)) == str(tiny_llama_dir)
    assert base_of("anything", adapter=str(tiny_adapter_dir)) == "anything"
    with pytest.raises(NotFoundError, match="--compare BASE_MODEL"):
        base_of(str(tiny_llama_dir))


def test_device_map_auto_places_the_model_through_accelerate(loaded, tiny_llama_dir, tiny_adapter_dir, monkeypatch):
    """accelerate's big-model placement (here, with no GPU, everything on the CPU): the same logits, with or
    without an adapter merged on top; --device beside it is refused."""
    from transformers import AutoModelForCausalLM

    asked = []
    original = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        AutoModelForCausalLM,
        "from_pretrained",
        lambda *args, **kwargs: asked.append(kwargs.get("device_map")) or original(*args, **kwargs),
    )
    placed = load_model(str(tiny_llama_dir), device_map="auto")
    assert asked == ["auto"] and placed.device == "cpu"
    assert torch.allclose(_logits(placed), _logits(loaded))
    tuned = load_model(str(tiny_llama_dir), adapter=str(tiny_adapter_dir), device_map="auto")
    assert torch.allclose(_logits(tuned), _logits(load_model(str(tiny_llama_dir), adapter=str(tiny_adapter_dir))))
    with pytest.raises(UserInputError, match="leave out --device"):
        load_model(str(tiny_llama_dir), device="cpu", device_map="auto")
    with pytest.raises(UserInputError, match="choose one of auto"):
        load_model(str(tiny_llama_dir), device_map="everywhere")


def test_a_gptq_folder_without_its_libraries_names_the_extra(tmp_path, tiny_llama_dir, monkeypatch):
    import json

    import transformers.quantizers.quantizer_gptq as gptq_quantizer

    monkeypatch.setattr(gptq_quantizer, "is_optimum_available", lambda: False)  # as where lmforge[gptq] is missing
    folder = tmp_path / "gptq"
    shutil.copytree(tiny_llama_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DependencyError, match=r"requires optimum .*lmforge\[gptq\]"):
        load_model(str(folder))
