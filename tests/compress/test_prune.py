"""Pruning: which weights go (magnitude vs Wanda, unstructured vs 2:4), and MLP channels that really shrink."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lmforge.compress import prune
from lmforge.errors import UserInputError
from lmforge.generate.load import load_model


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_wanda_unstructured_zeroes_half_of_every_row_of_every_decoder_linear(tmp_path, tiny_llama_dir):
    result = prune(tiny_llama_dir, tmp_path / "pruned", sparsity=0.5, method="wanda", samples=4)
    before, after = _weights(tiny_llama_dir), _weights(tmp_path / "pruned")
    assert result.sparsity == pytest.approx(0.5) and result.layers == 14
    for name, weight in after.items():
        if ".layers." in name and name.endswith("proj.weight"):
            assert ((weight == 0).sum(dim=1) == weight.shape[1] // 2).all(), name
            kept = weight != 0
            assert torch.equal(weight[kept], before[name][kept])  # survivors are unchanged
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    assert torch.equal(after["lm_head.weight"], before["lm_head.weight"])
    loaded = load_model(str(tmp_path / "pruned"))  # what generate/chat/eval/serve load
    assert loaded.model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == loaded.model.config.vocab_size


def test_magnitude_2_4_keeps_the_two_largest_of_every_four(tmp_path, tiny_llama_dir):
    prune(tiny_llama_dir, tmp_path / "sparse", method="magnitude", pattern="2:4")
    name = "model.layers.0.mlp.down_proj.weight"
    before, after = _weights(tiny_llama_dir)[name], _weights(tmp_path / "sparse")[name]
    groups_before, groups_after = before.reshape(-1, 4), after.reshape(-1, 4)
    assert ((groups_after != 0).sum(dim=1) == 2).all()
    largest = groups_before.abs().topk(2, dim=1).indices.sort(dim=1).values
    assert torch.equal((groups_after != 0).nonzero()[:, 1].reshape(-1, 2), largest)


def test_wanda_weighs_weights_by_their_inputs_so_it_prunes_other_weights_than_magnitude(tmp_path, tiny_llama_dir):
    prune(tiny_llama_dir, tmp_path / "wanda", sparsity=0.5, method="wanda", samples=4)
    prune(tiny_llama_dir, tmp_path / "magnitude", sparsity=0.5, method="magnitude")
    name = "model.layers.1.self_attn.o_proj.weight"
    assert not torch.equal(_weights(tmp_path / "wanda")[name] == 0, _weights(tmp_path / "magnitude")[name] == 0)


def test_mlp_channel_pruning_shrinks_the_saved_model_and_it_reloads(tmp_path, tiny_llama_dir):
    result = prune(tiny_llama_dir, tmp_path / "narrow", sparsity=0.5, method="magnitude", structure="mlp")
    assert result.params_after < result.params_before
    weights = _weights(tmp_path / "narrow")
    assert weights["model.layers.0.mlp.up_proj.weight"].shape == (64, 64)  # 128 channels → 64
    assert weights["model.layers.0.mlp.down_proj.weight"].shape == (64, 64)
    size = (tmp_path / "narrow" / "model.safetensors").stat().st_size
    assert size < (tiny_llama_dir / "model.safetensors").stat().st_size
    loaded = load_model(str(tmp_path / "narrow"))
    assert loaded.model.config.intermediate_size == 64 and loaded.model.num_parameters() == result.params_after


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparsity": 1.0}, "between 0 and 1"),
        ({"method": "random"}, "unknown --method"),
        ({"pattern": "4:8"}, "unknown --pattern"),
        ({"pattern": "2:4", "structure": "mlp"}, "does not combine"),
    ],
)
def test_bad_options_are_user_errors(tmp_path, tiny_llama_dir, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        prune(tiny_llama_dir, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
