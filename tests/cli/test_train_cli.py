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
    file.write_text(
        yaml.safe_dump(
            {
                "stage": "sft",
                "out": str(tmp_path / "run"),
                "model": {"path": str(tiny_llama_dir)},
                "data": {"train": "builtin:arith-sft", "max_examples": 8, "max_len": 48, "eval_fraction": 0},
                "train": {"max_steps": 5, "micro_batch_size": 4},
            }
        )
    )
    result = runner.invoke(
        app, ["train", str(file), "--set", "train.max_steps=2", "--set", "method.name=lora", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # stdout is the JSON alone: warnings and progress go to stderr
    assert payload["steps"] == 2 and payload["method"] == "lora"
    assert payload["trainable_params"] == payload["planned_trainable_params"]
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["max_steps"] == 2


def _sft_config(tmp_path, model, out) -> str:
    file = tmp_path / "sft.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "stage": "sft",
                "out": str(out),
                "model": {"path": str(model)},
                "data": {"train": "builtin:arith-sft", "max_examples": 8, "max_len": 48, "eval_fraction": 0},
                "train": {"max_steps": 1, "micro_batch_size": 4},
            }
        )
    )
    return str(file)


def test_a_model_folder_without_a_tokenizer_is_one_line_naming_model_tokenizer(tmp_path, tiny_llama_dir):
    """transformers' own error would tell the user to install sentencepiece; the fix is model.tokenizer."""
    import shutil

    bare = tmp_path / "weights-only"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_llama_dir / name, bare / name)
    result = runner.invoke(app, ["train", _sft_config(tmp_path, bare, tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bare} holds no tokenizer files" in lines[0] and "set model.tokenizer" in lines[0]
    fixed = runner.invoke(
        app,
        [
            "train",
            _sft_config(tmp_path, bare, tmp_path / "run"),
            "--set",
            f"model.tokenizer={tiny_llama_dir}",
            "--json",
        ],
    )
    assert fixed.exit_code == 0, fixed.output


def test_an_unwritable_out_folder_is_one_line_naming_out(tmp_path, tiny_llama_dir):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    result = runner.invoke(app, ["train", _sft_config(tmp_path, tiny_llama_dir, blocker / "sft")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == (
        f"Error: out: cannot write to the folder {blocker / 'sft'} (Not a directory); "
        "set out to a folder you can write to"
    )


def test_an_os_error_about_the_users_paths_is_one_line_in_any_command(tmp_path):
    blocker = tmp_path / "splits"
    blocker.write_text("a file")
    result = runner.invoke(app, ["data", "split", "builtin:sentiment", "--out", str(blocker / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {blocker}: File exists; check the path")
