"""`lmforge compress`: --json results, --report tables, one-line errors."""

from __future__ import annotations

import json
import sys

from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


def test_prune_json_with_report(tmp_path, tiny_llama_dir):
    result = runner.invoke(
        app,
        [
            "compress",
            "prune",
            str(tiny_llama_dir),
            str(tmp_path / "out"),
            "--structure",
            "mlp",
            "--method",
            "magnitude",
            "--report",
            str(tmp_path / "report"),
            "--limit",
            "2",
            "--decode-tokens",
            "4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{") :])
    assert payload["result"]["structure"] == "mlp"
    assert payload["report"]["compressed"][0]["params"] < payload["report"]["original"]["params"]
    assert (tmp_path / "report" / "report.md").is_file()


def test_a_method_whose_extra_is_missing_is_one_line_error(tmp_path, tiny_llama_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "gptqmodel", None)  # as where lmforge[gptq] is not installed
    result = runner.invoke(app, ["compress", "quantize", str(tiny_llama_dir), str(tmp_path / "o"), "--method", "gptq"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --method gptq needs gptqmodel: pip install 'lmforge[gptq]'"


def test_gguf_of_an_encoder_is_one_line_error(tmp_path, minilm_dir):
    result = runner.invoke(
        app, ["compress", "quantize", str(minilm_dir), str(tmp_path / "m.gguf"), "--method", "gguf-q8_0"]
    )
    assert result.exit_code == 2 and not (tmp_path / "m.gguf").exists()
    assert result.output.strip().startswith("Error: gguf-q8_0: model is an encoder; lmforge writes GGUF for decoders")
    assert len(result.output.strip().splitlines()) == 1


def test_prune_heads_json(tmp_path, tiny_llama_dir):
    out = tmp_path / "out"
    args = ["compress", "prune", str(tiny_llama_dir), str(out), "--structure", "heads", "--method", "magnitude"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{") :])
    assert payload["result"]["structure"] == "heads" and payload["result"]["sparsity"] == 0.5
    config = json.loads((out / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (2, 1, 16)
    refused = runner.invoke(app, [*args[:3], str(tmp_path / "other"), *args[4:], "--sparsity", "0.1"])
    errors = [line for line in refused.output.splitlines() if "Error" in line]  # after transformers' load bar
    assert refused.exit_code == 2 and len(errors) == 1, refused.output
    assert errors[0].startswith("Error: --sparsity 0.1 removes no attention head")
    assert not (tmp_path / "other").exists()
