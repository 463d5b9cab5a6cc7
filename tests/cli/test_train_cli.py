"""`lmforge train` through the CLI runner: errors are one line, --print-config, --json, --set."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


def test_print_config_for_a_stage():
    result = runner.invoke(app, ["train", "--print-config", "dpo"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["stage"] == "dpo" and "beta:" in result.output


def test_unknown_stage_in_print_config_is_one_line_error():
    result = runner.invoke(app, ["train", "--print-config", "ppo"])
    assert result.exit_code == 2 and "unknown stage" in result.output and "Traceback" not in result.output


def test_bad_config_lists_every_problem(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("stage: sft\nmodel: {path: m}\ntrain: {learning_rat: 1, precision: fp8}\n")
    result = runner.invoke(app, ["train", str(file), "--set", "method.name=lorra"])
    assert result.exit_code == 2
    assert "train.learning_rat: unknown key" in result.output and "train.precision" in result.output
    assert "method.name" in result.output and "Traceback" not in result.output


def test_train_json_with_overrides(tmp_path, tiny_llama_dir):
    file = tmp_path / "sft.yaml"
    file.write_text(yaml.safe_dump({
        "stage": "sft", "out": str(tmp_path / "run"), "model": {"path": str(tiny_llama_dir)},
        "data": {"train": "builtin:arith-sft", "max_examples": 8, "max_len": 48, "eval_fraction": 0},
        "train": {"max_steps": 5, "micro_batch_size": 4},
    }))
    result = runner.invoke(app, ["train", str(file), "--set", "train.max_steps=2", "--set", "method.name=lora", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["steps"] == 2 and payload["method"] == "lora"
    assert payload["trainable_params"] == payload["planned_trainable_params"]
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["max_steps"] == 2
