"""Packing in training (lmforge.train.packing): packed examples train exactly as they would alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.errors import ConfigError, UserInputError


def _per_example_losses(logits, labels, positions=None):  # type: ignore[no-untyped-def]
    """Summed next-token loss of each example: per row, or per run of restarting position_ids in a packed row."""
    import torch

    losses = []
    for row in range(labels.shape[0]):
        starts = [0] if positions is None else [i for i, p in enumerate(positions[row].tolist()) if p == 0]
        ends = starts[1:] + [labels.shape[1]]
        for start, end in zip(starts, ends, strict=True):
            target = labels[row, start + 1 : end]
            keep = target != -100
            if not keep.any():
                continue  # a packed row's padding tail
            token_losses = torch.nn.functional.cross_entropy(
                logits[row, start : end - 1][keep], target[keep], reduction="sum"
            )
            losses.append(round(float(token_losses), 4))
    return sorted(losses)


def test_a_packed_examples_loss_equals_its_loss_alone(tiny_llama_dir: Path, tiny_tokenizer) -> None:
    import torch
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from lmforge.data.builtin import load_builtin
    from lmforge.data.pack import PackedCollator, pack_examples
    from lmforge.data.tokenize import tokenize_chat

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    chats = tokenize_chat(load_builtin("builtin:arith-sft", n=8), tiny_tokenizer, max_len=64).dataset
    features = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in chats]
    padded = DataCollatorForSeq2Seq(tiny_tokenizer, padding=True, label_pad_token_id=-100)(features)
    packed_rows = pack_examples(chats.remove_columns("attention_mask"), block_size=128)
    assert len(packed_rows) < len(chats)  # several chats really share rows
    packed = PackedCollator(pad_token_id=tiny_tokenizer.pad_token_id)(list(packed_rows))
    with torch.no_grad():
        alone = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
        together = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
    expected = _per_example_losses(alone, padded["labels"])
    assert len(expected) == 8
    assert _per_example_losses(together, packed["labels"], packed["position_ids"]) == pytest.approx(expected, abs=1e-4)


def test_the_check_stops_a_model_whose_packed_examples_see_each_other(tiny_llama_dir: Path, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM, masking_utils

    from lmforge.train.packing import verify_packing

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert verify_packing(model) < 1e-4
    # As in an attention implementation that ignores the boundaries in position_ids: one causal mask per row.
    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    with pytest.raises(UserInputError, match="packed examples see each other"):
        verify_packing(model)


def test_auto_packs_only_stages_and_architectures_that_keep_examples_apart(make_config) -> None:
    from lmforge.train.packing import resolve_packing, supports_packing

    assert supports_packing("llama") and supports_packing("qwen2") and not supports_packing("mamba")
    assert resolve_packing(make_config("sft"), "llama") is True
    assert resolve_packing(make_config("pretrain"), "llama") is True
    assert resolve_packing(make_config("sft", data={"packing": "off"}), "llama") is False
    assert resolve_packing(make_config("dpo", "lora"), "llama") is False
    with pytest.raises(ConfigError, match="applies to stages pretrain, sft"):
        resolve_packing(make_config("dpo", "lora", data={"packing": "on"}), "llama")
    with pytest.raises(ConfigError, match="does not keep packed examples apart"):
        resolve_packing(make_config("sft", data={"packing": "on"}), "mamba")


@pytest.mark.parametrize("stage", ["sft", "pretrain"])
def test_a_packed_run_trains_on_fewer_rows_with_the_same_tokens(make_config, stage: str) -> None:
    from lmforge.train.run import run_training

    packed = run_training(make_config(stage, data={"max_len": 128}), progress=False)
    summary = json.loads((packed.run_dir / "data" / "summary.json").read_text())
    plain_config = make_config(stage, data={"packing": "off", "max_len": 128}, out=str(packed.run_dir) + "-unpacked")
    plain = run_training(plain_config, progress=False)
    plain_summary = json.loads((plain.run_dir / "data" / "summary.json").read_text())
    assert summary["packed"] and not plain_summary["packed"]
    rows, plain_rows = summary["splits"]["train"]["sequences"], plain_summary["splits"]["train"]["sequences"]
    assert rows < plain_rows if stage == "sft" else rows >= plain_rows  # pretrain: documents no longer span rows
    for key in ("examples_out", "tokens"):
        assert summary["splits"]["train"][key] == plain_summary["splits"]["train"][key]
    assert packed.steps == plain.steps == 2
    assert all(v == v for v in packed.final_metrics.values())  # finite, no NaN
