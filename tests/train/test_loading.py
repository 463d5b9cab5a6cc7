import pickle
import shutil

import pytest

from lmforge.errors import UnsafeFileError
from lmforge.train.loading import load_pretrained


def test_a_pickle_weight_file_must_pass_the_scanner_before_training_loads_it(tmp_path, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", folder / "config.json")
    torch.save(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict(), folder / "pytorch_model.bin")
    assert load_pretrained(str(folder), "causal").config.num_hidden_layers == 2  # a benign pickle loads

    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeFileError, match="pytorch_model.bin"):
        load_pretrained(str(folder), "causal")
    assert not canary.exists()


def _save_adapter(tiny_llama_dir, folder, peft_config):
    """A causal-LM adapter on the tiny Llama, saved as a run's final/ would be (LoRA B made non-zero, so
    merging it visibly changes the weights)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), peft_config)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    model.save_pretrained(folder)
    return model


def test_a_causal_lora_adapter_is_merged_into_a_reward_model_body(tmp_path, tiny_llama_dir):
    """An SFT LoRA run under a sequence-classification head: the body is the SFT-merged body, not the raw base."""
    import torch
    from peft import LoraConfig

    adapter = _save_adapter(
        tiny_llama_dir, tmp_path / "sft", LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj", "v_proj"])
    )
    expected = adapter.merge_and_unload().model.state_dict()
    reward = load_pretrained(str(tmp_path / "sft"), "classify", num_labels=1)
    assert type(reward).__name__ == "LlamaForSequenceClassification" and reward.config.num_labels == 1
    body = reward.model.state_dict()
    assert body.keys() == expected.keys()
    assert all(torch.equal(body[name], expected[name]) for name in expected)
    assert all(parameter.requires_grad for parameter in reward.parameters())  # the method decides what trains


@pytest.mark.parametrize("kind", ["prompt", "prefix"])
def test_a_prompt_or_prefix_adapter_cannot_start_a_run_and_says_what_to_do(kind, tmp_path, tiny_llama_dir):
    from peft import PrefixTuningConfig, PromptTuningConfig

    from lmforge.errors import ConfigError
    from lmforge.train.config import validate_config
    from lmforge.train.run import run_training

    adapter_type = PromptTuningConfig if kind == "prompt" else PrefixTuningConfig
    _save_adapter(tiny_llama_dir, tmp_path / "sft", adapter_type(task_type="CAUSAL_LM", num_virtual_tokens=2))
    message = (
        f"holds a {kind}-tuning adapter, which cannot be merged.*"
        f"start from its base {tiny_llama_dir}, or train that run with method lora"
    )
    for task in ("causal", "classify"):
        with pytest.raises(ConfigError, match=message):
            load_pretrained(str(tmp_path / "sft"), task)
    config = validate_config({"stage": "rm", "out": str(tmp_path / "rm"), "model": {"path": str(tmp_path / "sft")}})
    with pytest.raises(ConfigError, match=message):
        run_training(config, progress=False)
    assert not (tmp_path / "rm").exists()  # refused before the run folder is made
