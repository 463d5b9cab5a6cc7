"""Low-rank factorization: rank from kept energy, only where it shrinks, reloaded by every lmforge command."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.compress import factorize
from lmforge.compress.factorize import rank_for_energy
from lmforge.errors import UserInputError
from lmforge.generate.load import load_model


def test_rank_is_the_smallest_that_keeps_the_energy():
    singular = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert rank_for_energy(singular, 9 / 14) == 1
    assert rank_for_energy(singular, 0.9) == 2
    assert rank_for_energy(singular, 1.0) == 3


def test_factorized_model_reloads_through_load_model_and_stays_close(tmp_path, tiny_llama_dir):
    result = factorize(tiny_llama_dir, tmp_path / "svd", energy=0.7)
    assert result.ranks and result.params_after < result.params_before
    saved = json.loads((tmp_path / "svd" / "lmforge_lowrank.json").read_text())["ranks"]
    assert saved == result.ranks and all(rank < 64 for rank in saved.values())
    original, factorized = load_model(str(tiny_llama_dir)), load_model(str(tmp_path / "svd"))
    assert factorized.model.num_parameters() == result.params_after
    ids = torch.tensor([[1, 5, 9, 20, 3]])
    with torch.inference_mode():
        reference, approximate = original.model(ids).logits, factorized.model(ids).logits
    # kept energy 0.7 of a random init: logits move but stay on the original's scale
    assert (approximate - reference).abs().max() < reference.abs().max()


def test_a_rank_that_would_not_save_anything_keeps_the_layer_dense(tmp_path, tiny_llama_dir):
    result = factorize(tiny_llama_dir, tmp_path / "full", rank=64)  # 64·(64+64) ≥ 64·64
    assert "model.layers.0.self_attn.q_proj" in result.kept_dense
    assert "model.layers.0.self_attn.q_proj" not in result.ranks


def test_energy_or_rank_exactly_one(tmp_path, tiny_llama_dir):
    with pytest.raises(UserInputError, match="exactly one"):
        factorize(tiny_llama_dir, tmp_path / "x", energy=0.9, rank=4)
    with pytest.raises(UserInputError, match="exactly one"):
        factorize(tiny_llama_dir, tmp_path / "x")
