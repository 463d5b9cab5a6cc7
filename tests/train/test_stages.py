"""Every stage x method that runs on a CPU: a few steps, then the saved final/ loads back and differs
from the starting model (it trained), with tokenizer and model card beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.train.run import run_training

CAUSAL_CASES = [
    ("pretrain", "full"),
    ("pretrain", "lora"),
    ("sft", "full"),
    ("sft", "freeze"),
    ("sft", "lora"),
    ("sft", "prompt"),
    ("sft", "prefix"),
    ("dpo", "full"),
    ("dpo", "lora"),
    ("kto", "lora"),
    ("orpo", "lora"),
    ("distill", "full"),
    ("distill", "lora"),
]


def _load_final(final: Path, head: str, **kwargs):
    import peft
    import transformers

    if (final / "adapter_config.json").is_file():
        assert (final / "adapter_model.safetensors").is_file()
        return getattr(peft, f"AutoPeft{head}").from_pretrained(final, **kwargs)
    assert (final / "model.safetensors").is_file()
    return getattr(transformers, f"Auto{head}").from_pretrained(final, **kwargs)


def _logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits[:, -1]  # prompt tuning prepends virtual positions


def _check_run(result, head: str, base_dir: Path) -> None:
    import transformers

    final = result.final_dir
    assert result.steps == 2
    assert (final / "tokenizer.json").is_file() or (final / "vocab.txt").is_file()
    card = (final / "README.md").read_text()
    assert f"stage **{result.stage}**" in card and f"method **{result.method}**" in card and "Steps: 2" in card
    assert f"{head}.from_pretrained('{final}')" in card  # the card's load snippet names the right head
    for name in ("config.yaml", "plan.json", "metrics.jsonl", "result.json"):
        assert (result.run_dir / name).is_file(), name
    assert json.loads((result.run_dir / "result.json").read_text())["steps"] == 2
    trained = _load_final(final, head).eval()
    base = getattr(transformers, f"Auto{head}").from_pretrained(base_dir).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    assert not torch.allclose(_logits(trained, ids), _logits(base, ids)), "the final model equals the start"


@pytest.mark.parametrize(("stage", "method"), CAUSAL_CASES)
def test_causal_stage_trains_and_loads_back(stage, method, make_config, tiny_llama_dir):
    extra = {"distill": {"teacher": str(tiny_llama_dir)}} if stage == "distill" else {}
    if stage == "orpo":  # trl's ORPO loss is NaN for a pair whose completion is truncated away entirely
        extra["data"] = {"max_len": 256}
    if stage == "pretrain" and method == "full":  # from scratch: the weights come from model.config
        extra["model"] = {
            "path": None,
            "tokenizer": "bpe:300",
            "config": {
                "model_type": "llama",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
            },
        }
    result = run_training(make_config(stage, method, **extra), progress=False)
    if stage == "pretrain" and method == "full":  # with a BPE trained on the corpus, saved for --resume
        from transformers import AutoModelForCausalLM, AutoTokenizer

        assert len(AutoTokenizer.from_pretrained(result.run_dir / "tokenizer")) == 300
        assert len(AutoTokenizer.from_pretrained(result.final_dir)) == 300
        assert AutoModelForCausalLM.from_pretrained(result.final_dir).config.vocab_size == 300
        assert result.final_metrics["train_loss"] > 0
        return
    _check_run(result, "ModelForCausalLM", tiny_llama_dir)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_reward_model_reports_pairwise_accuracy(method, make_config, tiny_llama_dir):
    config = make_config("rm", method, data={"eval_fraction": 0.5}, train={"eval_every": 1})
    result = run_training(config, progress=False)
    assert 0.0 <= result.final_metrics["eval_accuracy"] <= 1.0
    assert (result.final_dir / "README.md").read_text().count("eval_accuracy") == 1
    model = _load_final(result.final_dir, "ModelForSequenceClassification", num_labels=1)
    assert model.config.num_labels == 1


@pytest.mark.parametrize(("algorithm", "method"), [("grpo", "lora"), ("rloo", "full")])
def test_rlhf_against_reward_model(algorithm, method, make_config, tiny_reward_dir, tiny_llama_dir):
    config = make_config(
        "rlhf",
        method,
        rlhf={"reward_model": str(tiny_reward_dir), "algorithm": algorithm, "num_generations": 2, "max_new_tokens": 4},
    )
    result = run_training(config, progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("reward" in record for record in records), "the reward model's scores are logged"
    _check_run(result, "ModelForCausalLM", tiny_llama_dir)


def test_classify_real_minilm_on_sentiment(make_config, minilm_dir):
    config = make_config(
        "classify",
        "full",
        model={"path": str(minilm_dir)},
        data={"eval_fraction": 0.5, "max_len": 16},
        train={"micro_batch_size": 2},
    )
    result = run_training(config, progress=False)
    assert 0.0 <= result.final_metrics["eval_accuracy"] <= 1.0
    model = _load_final(result.final_dir, "ModelForSequenceClassification")
    assert model.config.id2label == {0: "negative", 1: "positive"}


@pytest.mark.parametrize("method", ["lora", "freeze"])
def test_classify_methods_keep_label_names(method, make_config, tiny_bert_dir):
    """A LoRA classifier is saved merged, so its label names survive a plain from_pretrained."""
    config = make_config("classify", method, model={"path": str(tiny_bert_dir)})
    result = run_training(config, progress=False)
    assert not (result.final_dir / "adapter_config.json").exists()
    model = _load_final(result.final_dir, "ModelForSequenceClassification")
    assert model.config.id2label == {0: "negative", 1: "positive"}


def test_mlm_on_tiny_bert(make_config, tiny_bert_dir):
    result = run_training(make_config("mlm", "full", model={"path": str(tiny_bert_dir)}), progress=False)
    _check_run(result, "ModelForMaskedLM", tiny_bert_dir)


def test_adapter_on_an_adapter_run_names_the_merged_base(make_config, tmp_path):
    """DPO-LoRA on an SFT-LoRA run: final/ must load as SFT-merged base + DPO adapter, not the raw base."""
    import peft

    sft = run_training(make_config("sft", "lora"), progress=False)
    dpo = run_training(make_config("dpo", "lora", model={"path": str(sft.run_dir)}), progress=False)
    adapter = json.loads((dpo.final_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((dpo.run_dir / "base").resolve())
    ids = torch.tensor([[5, 6, 7, 8]])
    sft_merged = peft.AutoPeftModelForCausalLM.from_pretrained(sft.final_dir).merge_and_unload().eval()
    dpo_model = peft.AutoPeftModelForCausalLM.from_pretrained(dpo.final_dir).eval()
    with dpo_model.disable_adapter():
        base_logits = _logits(dpo_model, ids)
    assert torch.allclose(_logits(sft_merged, ids), base_logits, atol=1e-5)


def test_chosen_chat_template_is_saved_with_the_final_tokenizer(make_config, tiny_llama_dir):
    from transformers import AutoTokenizer

    from lmforge.data.templates import BUILTIN_TEMPLATES

    result = run_training(make_config("sft", "lora", data={"template": "alpaca", "max_len": 128}), progress=False)
    assert result.chat_template == "alpaca"
    assert AutoTokenizer.from_pretrained(result.final_dir).chat_template == BUILTIN_TEMPLATES["alpaca"]
    assert "Chat template: alpaca" in (result.final_dir / "README.md").read_text()


def test_max_len_that_leaves_nothing_to_train_is_a_clear_error(make_config):
    from lmforge.errors import UserInputError

    with pytest.raises(UserInputError, match="data.max_len 8: none of the 16 chats"):
        run_training(make_config("sft", "full", data={"max_len": 8}), progress=False)


def test_full_reward_model_from_a_lora_sft_run(make_config):
    """The SFT adapter (causal-LM task) is merged under a sequence-classification head, all trainable."""
    sft = run_training(make_config("sft", "lora"), progress=False)
    rm = run_training(make_config("rm", "full", model={"path": str(sft.run_dir)}), progress=False)
    assert rm.trainable_params == rm.total_params and rm.steps == 2


def test_every_head_starts_from_a_lora_sft_run_without_a_merge_step(make_config):
    """The quickstart chain on run folders only: a LoRA reward model on the SFT-LoRA run, RLHF on that run
    scored by it, a classifier on it, and the run as a distillation teacher."""
    sft = run_training(make_config("sft", "lora"), progress=False)
    rm = run_training(make_config("rm", "lora", model={"path": str(sft.run_dir)}), progress=False)
    assert rm.steps == 2 and 0 < rm.trainable_params < rm.total_params
    reward = _load_final(rm.final_dir, "ModelForSequenceClassification")  # saved merged: a plain classifier
    assert reward.config.num_labels == 1
    rlhf = run_training(
        make_config(
            "rlhf",
            "lora",
            model={"path": str(sft.run_dir)},
            rlhf={"reward_model": str(rm.run_dir), "num_generations": 2, "max_new_tokens": 4},
        ),
        progress=False,
    )
    records = [json.loads(line) for line in (rlhf.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rlhf.steps == 2 and any("reward" in record for record in records)
    classify = run_training(make_config("classify", "lora", model={"path": str(sft.run_dir)}), progress=False)
    assert _load_final(classify.final_dir, "ModelForSequenceClassification").config.id2label == {
        0: "negative",
        1: "positive",
    }
    distill = run_training(make_config("distill", "lora", distill={"teacher": str(sft.run_dir)}), progress=False)
    assert distill.steps == 2 and distill.final_metrics["train_loss"] > 0


def test_a_reward_model_learns_a_separable_preference(make_config, tmp_path):
    """Not only a figure between 0 and 1: on pairs a linear probe could separate (the chosen answer always says
    "correct", the rejected one "wrong"), held-out pairwise accuracy goes well above chance in a few steps."""
    import random

    rng = random.Random(0)
    lines = []
    for _i in range(160):
        prompt = [{"role": "user", "content": f"Is {rng.randint(1, 99)} plus {rng.randint(1, 99)} right?"}]
        lines.append(
            json.dumps(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": "correct"}],
                    "rejected": [{"role": "assistant", "content": "wrong"}],
                }
            )
        )
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(lines) + "\n")
    config = make_config(
        "rm",
        "full",
        data={"train": str(data), "max_examples": None, "eval_fraction": 0.25},
        train={"max_steps": 30, "learning_rate": 3e-3, "eval_every": 30},
    )
    result = run_training(config, progress=False)
    assert result.final_metrics["eval_accuracy"] >= 0.9


def test_a_classifier_learns_builtin_sentiment(make_config, minilm_dir):
    """The real MiniLM fine-tuned for 30 steps on built-in reviews: held-out accuracy far above chance."""
    config = make_config(
        "classify",
        "full",
        model={"path": str(minilm_dir)},
        data={"max_examples": 400, "eval_fraction": 0.25, "max_len": 24},
        train={"max_steps": 30, "micro_batch_size": 16, "learning_rate": 1e-4, "eval_every": 30},
    )
    result = run_training(config, progress=False)
    assert result.final_metrics["eval_accuracy"] >= 0.8  # two balanced labels: chance is 0.5
