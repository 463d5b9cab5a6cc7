"""`lmforge convert`: human summary or --json, one-line errors with their exit codes."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from lmforge.cli.main import app
from tests.files.corpus import os_system

runner = CliRunner()


def test_pickle_to_safetensors_json_report(tmp_path):
    torch.save({"w": torch.ones(2, 2), "b": torch.zeros(2)}, tmp_path / "model.pt")
    result = runner.invoke(app, ["convert", str(tmp_path / "model.pt"), str(tmp_path / "model.safetensors"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["to"] == "safetensors" and report["tensor_count"] == 2 and report["verified"] is True
    assert (tmp_path / "model.safetensors").is_file()


def test_gguf_human_output_names_quant_and_check(tmp_path, tiny_llama_dir):
    result = runner.invoke(app, ["convert", str(tiny_llama_dir), str(tmp_path / "m.gguf"), "--quant", "q8_0"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps at the terminal width
    assert "as gguf (q8_0)" in text and "verified" in text and "max_abs_error" in text


def test_unsafe_pickle_exits_1_with_one_line(tmp_path):
    (tmp_path / "evil.bin").write_bytes(os_system(tmp_path / "canary", protocol=4))
    result = runner.invoke(app, ["convert", str(tmp_path / "evil.bin"), str(tmp_path / "out.safetensors")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert "--trust-pickle" in result.output
    assert not (tmp_path / "canary").exists() and not (tmp_path / "out.safetensors").exists()


def test_bad_options_exit_2_with_one_line(tmp_path, tiny_llama_dir):
    cases = [
        (["--to", "tflite"], "unknown --to"),
        (["--quant", "q8_0"], "--quant applies to GGUF output only"),
        (["--max-shard-size", "lots"], "cannot read size"),
    ]
    for options, message in cases:
        result = runner.invoke(app, ["convert", str(tiny_llama_dir), str(tmp_path / "out"), *options])
        assert result.exit_code == 2, result.output
        assert result.output.strip().startswith("Error: ") and message in result.output
        assert len(result.output.strip().splitlines()) == 1
