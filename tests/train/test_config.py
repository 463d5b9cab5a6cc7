"""Config validation: every problem at once, naming the key and the allowed values, before any load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmforge.errors import ConfigError, DependencyError
from lmforge.train.config import STAGES, load_config, print_config, validate_config

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def test_all_problems_reported_together_with_allowed_values():
    with pytest.raises(ConfigError) as error:
        validate_config({"stage": "sftt", "method": {"name": "lorra"}, "train": {"lr": 1, "precision": "fp8"}})
    message = str(error.value)
    assert "stage:" in message and "'pretrain'" in message and "'mlm'" in message
    assert "method.name:" in message and "'qlora'" in message
    assert "train.precision:" in message and "'bf16'" in message
    assert "train.lr: unknown key (allowed: max_steps" in message and "learning_rate" in message


def test_cross_field_problems_are_listed_together():
    with pytest.raises(ConfigError) as error:
        validate_config({"stage": "rlhf", "model": {}, "train": {"auto_fit": True}})
    message = str(error.value)
    assert "model.path" in message and "rlhf.reward_model" in message and "train.target_gpu" in message


def test_set_overrides_are_typed_and_nested(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("stage: sft\nmodel: {path: m}\n")
    config = load_config(
        file, ["train.max_steps=7", "method.name=lora", "train.early_stopping.patience=2", "train.eval_every=1"]
    )
    assert config.train.max_steps == 7 and config.method.name == "lora"
    assert config.train.early_stopping.patience == 2
    with pytest.raises(ConfigError, match="train.max_stepz: unknown key"):
        load_config(file, ["train.max_stepz=7"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(file, ["train.max_steps"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: [sft\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("stage", STAGES)
def test_print_config_is_a_valid_commented_config(stage):
    text = print_config(stage)
    assert text.count("#") > 20
    config = validate_config(yaml.safe_load(text))
    assert config.stage == stage


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_parses(example):
    config = load_config(example)
    stage, _, method = example.stem.partition("-")  # STAGE.yaml or STAGE-METHOD.yaml
    assert config.stage == stage
    assert config.method.name == (method or config.method.name)


def test_every_stage_has_an_example():
    assert {load_config(p).stage for p in EXAMPLES} == set(STAGES)


def test_qlora_on_cpu_stops_before_loading_anything(tmp_path):
    import torch

    from lmforge.train.run import run_training

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = validate_config(
        {
            "stage": "sft",
            "out": str(tmp_path / "run"),
            "model": {"path": str(tmp_path / "absent")},
            "method": {"name": "qlora"},
        }
    )
    with pytest.raises(DependencyError, match="qlora needs a CUDA GPU.*lora"):
        run_training(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_config_import_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, lmforge.train.config, lmforge.cli.main; "
        "print(any(m in sys.modules for m in ('torch', 'transformers')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_field_and_cross_key_problems_in_one_error():
    with pytest.raises(ConfigError) as error:
        validate_config({"stage": "distill", "model": {"path": "m"}, "train": {"lr": 1, "auto_fit": True}})
    message = str(error.value)
    assert "train.lr: unknown key" in message and "distill.teacher" in message and "train.target_gpu" in message


def test_fp16_on_cpu_is_refused_and_auto_means_fp32():
    import torch

    from lmforge.errors import UserInputError
    from lmforge.train.context import precision_flags

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert precision_flags("auto") == {"bf16": False, "fp16": False}
    assert precision_flags("bf16") == {"bf16": True, "fp16": False}
    with pytest.raises(UserInputError, match="fp16 mixed precision needs a CUDA GPU"):
        precision_flags("fp16")


def test_missing_model_folders_are_named_before_the_run_folder_is_created(tmp_path):
    from lmforge.errors import NotFoundError
    from lmforge.train.run import run_training

    config = validate_config(
        {
            "stage": "rlhf",
            "out": str(tmp_path / "run"),
            "model": {"path": str(tmp_path / "a")},
            "rlhf": {"reward_model": str(tmp_path / "b")},
        }
    )
    with pytest.raises(NotFoundError, match="model.path: .*rlhf.reward_model: "):
        run_training(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_bpe_tokenizer_needs_a_size_and_a_from_scratch_model():
    with pytest.raises(ConfigError, match="bpe:N with N >= 300"):
        validate_config({"model": {"path": "m", "tokenizer": "bpe:512"}})
    with pytest.raises(ConfigError, match="bpe:N with N >= 300"):
        validate_config({"model": {"config": {"model_type": "llama"}, "tokenizer": "bpe:lots"}})
    assert validate_config({"model": {"config": {"model_type": "llama"}, "tokenizer": "bpe:512"}})


def test_data_tasks_narrow_the_builtin_train_and_held_out_sets():
    from lmforge.train.context import load_stage_data

    config = validate_config(
        {
            "stage": "sft",
            "model": {"path": "m"},
            "train": {"seed": 3},
            "data": {
                "train": "builtin:arith-sft",
                "tasks": ["sort", "convert"],
                "max_examples": 40,
                "eval_fraction": 0.25,
            },
        }
    )
    data = load_stage_data(config, "chat")
    prompts = [row["messages"][0]["content"] for split in (data.train, data.eval) for row in split]
    assert len(prompts) == 40 + 10
    assert all(p.startswith(("Sort the numbers", "Convert ")) for p in prompts)
    assert any(p.startswith("Sort") for p in prompts) and any(p.startswith("Convert") for p in prompts)


def test_data_tasks_problems_name_the_allowed_tasks_before_anything_loads():
    with pytest.raises(ConfigError) as error:
        validate_config({"model": {"path": "m"}, "data": {"train": "builtin:arith-sft", "tasks": ["sort", "multiply"]}})
    message = str(error.value)
    assert "data.tasks: unknown task(s) multiply; choose from add, subtract" in message and "word_problem" in message
    assert message.count("data.tasks") == 1  # reported once, not again by the second validation pass
    with pytest.raises(ConfigError, match="data.tasks: applies only to a builtin: source, but data.train is my.jsonl"):
        validate_config({"model": {"path": "m"}, "data": {"train": "my.jsonl", "tasks": ["sort"]}})
    with pytest.raises(ConfigError, match="data.tasks: builtin:sentiment is not drawn from the built-in tasks"):
        validate_config(
            {"stage": "classify", "model": {"path": "m"}, "data": {"train": "builtin:sentiment", "tasks": ["sort"]}}
        )
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \(none given\)"):
        validate_config({"model": {"path": "m"}, "data": {"tasks": []}})


def test_print_config_shows_data_tasks_commented():
    line = next(line for line in print_config("sft").splitlines() if line.strip().startswith("tasks:"))
    assert line.startswith("  tasks: null  # ") and "word_problem" in line


def test_a_tracker_that_is_not_installed_stops_before_the_run_folder(make_config, monkeypatch):
    import importlib.util

    from lmforge.train.run import run_training

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    config = make_config("sft", "full", train={"report_to": ["wandb"]})
    with pytest.raises(DependencyError, match="train.report_to: wandb is not installed: pip install wandb"):
        run_training(config, progress=False)
    assert not Path(config.out).exists()
