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
