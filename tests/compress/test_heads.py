"""Removing whole attention heads: the heads that contribute nothing are the ones that go, the rest of the
model computes exactly what it did, and plain from_pretrained reloads the smaller model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lmforge.compress import prune
from lmforge.compress.heads import prune_heads, remove_heads
from lmforge.errors import UserInputError

IDS = torch.tensor([[5, 17, 42, 8, 99, 3, 64, 21]])


def _save(path, tokenizer, model_type: str, heads: int, kv_heads: int, zeroed: list[list[int]] | None = None):
    """A 2-layer decoder of `model_type` (hidden 64) saved with the tiny tokenizer; the o_proj columns of
    the query heads in zeroed[layer] are set to zero, so those heads add nothing to the output."""
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=64 // heads,  # Qwen3's config defaults to 128
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    dim = 64 // heads
    with torch.no_grad():
        for layer, heads_off in zip(model.model.layers, zeroed or [], strict=False):
            for head in heads_off:
                layer.self_attn.o_proj.weight[:, head * dim : (head + 1) * dim] = 0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


@pytest.mark.parametrize(
    "model_type, heads, kv_heads, sparsity, method, zeroed, unit",
    [
        # 4 query heads per KV head: a quarter goes as one query head from each group, chosen per layer
        ("mistral", 8, 2, 0.25, "magnitude", [[1, 6], [0, 7]], "query"),
        # Qwen2's q/k/v biases are sliced with their rows; a half goes as a whole KV group
        ("qwen2", 4, 2, 0.5, "wanda", [[2, 3], [0, 1]], "group"),
        # Qwen3 normalises q and k per head (over head_dim), shared by every head
        ("qwen3", 8, 4, 0.25, "wanda", [[6, 7], [2, 3]], "group"),
        # one KV head (multi-query): only query heads can go
        ("llama", 4, 1, 0.5, "magnitude", [[0, 3], [1, 2]], "query"),
    ],
)
def test_heads_that_add_nothing_are_removed_and_the_logits_stay(
    tmp_path, tiny_tokenizer, model_type, heads, kv_heads, sparsity, method, zeroed, unit
):
    original = _save(tmp_path / "model", tiny_tokenizer, model_type, heads, kv_heads, zeroed)
    result = prune(
        tmp_path / "model", tmp_path / "pruned", sparsity=sparsity, method=method, samples=4, structure="heads"
    )
    kept = heads - len(zeroed[0])
    assert result.structure == "heads" and result.sparsity == pytest.approx(sparsity)
    assert ("whole KV groups" in result.notes[0]) == (unit == "group")
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    kv_kept = kv_heads - len(zeroed[0]) // (heads // kv_heads) if unit == "group" else kv_heads
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (
        kept,
        kv_kept,
        64 // heads,
    )
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()  # plain transformers, no lmforge
    attention = pruned.model.layers[0].self_attn
    assert attention.q_proj.weight.shape == (kept * 64 // heads, 64)
    assert attention.k_proj.weight.shape == (kv_kept * 64 // heads, 64)
    assert attention.o_proj.weight.shape == (64, kept * 64 // heads)
    assert pruned.num_parameters() == result.params_after < result.params_before
    size = (tmp_path / "pruned" / "model.safetensors").stat().st_size
    assert size < (tmp_path / "model" / "model.safetensors").stat().st_size
    with torch.no_grad():
        torch.testing.assert_close(pruned(IDS).logits, original(IDS).logits, rtol=1e-5, atol=1e-5)
        # the KV cache holds only the kept KV heads, and cached decoding matches the full forward pass
        prefix = pruned(IDS[:, :-1], use_cache=True)
        step = pruned(IDS[:, -1:], cache=prefix.past_key_values)
        torch.testing.assert_close(step.logits[:, -1], original(IDS).logits[:, -1], rtol=1e-5, atol=1e-5)


def test_keeping_every_head_changes_nothing_and_a_pruned_model_runs_in_memory_as_reloaded(tmp_path, tiny_tokenizer):
    model = _save(tmp_path / "model", tiny_tokenizer, "qwen2", 8, 2)
    model.set_attn_implementation("eager")  # repeats KV heads by the module's group size (SDPA may infer it)
    with torch.no_grad():
        before = model(IDS).logits
        remove_heads(model, [list(range(8))] * 2, [[0, 1]] * 2)
        assert torch.equal(model(IDS).logits, before)
        plan = prune_heads(model, 0.25)  # 3 of 4 query heads per KV head stay: the model in memory regroups
        assert (plan.unit, model.config.num_attention_heads, model.config.num_key_value_heads) == ("query", 6, 2)
        model.save_pretrained(tmp_path / "pruned")
        torch.testing.assert_close(
            AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")(IDS).logits, model(IDS).logits
        )


def test_magnitude_and_wanda_pick_heads_by_their_own_scores(tmp_path, tiny_tokenizer):
    _save(tmp_path / "model", tiny_tokenizer, "llama", 8, 1)
    for method in ("magnitude", "wanda"):
        prune(tmp_path / "model", tmp_path / method, sparsity=0.5, method=method, samples=4, structure="heads")
    magnitude, wanda = (
        AutoModelForCausalLM.from_pretrained(tmp_path / method).state_dict() for method in ("magnitude", "wanda")
    )
    assert any(not torch.equal(magnitude[name], wanda[name]) for name in magnitude if "q_proj" in name)


def test_unequal_groups_are_refused(tmp_path, tiny_tokenizer):
    model = _save(tmp_path / "model", tiny_tokenizer, "llama", 4, 2)
    with pytest.raises(ValueError, match="equal groups"):
        remove_heads(model, [[0, 1, 2], [0, 1, 2]], [[0, 1], [0, 1]])


def test_an_unsupported_family_or_a_share_no_head_gives_is_refused(tmp_path, tiny_tokenizer, tiny_llama_dir):
    with pytest.raises(UserInputError, match="removes no attention head: .* shares of 0.5 "):
        prune(tiny_llama_dir, tmp_path / "none", sparsity=0.1, method="magnitude", structure="heads")
    # LlamaConfig refuses a hidden size (64) that the head count (6 of 8) does not divide: 0.25 is not offered
    _save(tmp_path / "llama", tiny_tokenizer, "llama", 8, 2)
    with pytest.raises(UserInputError, match="shares of 0.5, 0.75 "):
        prune(tmp_path / "llama", tmp_path / "none", sparsity=0.25, method="magnitude", structure="heads")
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2)).save_pretrained(
        tmp_path / "gpt2"
    )
    tiny_tokenizer.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UserInputError, match="supports llama, mistral, qwen2, qwen3 decoders; this model is 'gpt2'"):
        prune(tmp_path / "gpt2", tmp_path / "out", sparsity=0.5, method="magnitude", structure="heads")
    assert not (tmp_path / "none").exists() and not (tmp_path / "out").exists()
