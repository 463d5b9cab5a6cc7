"""`lmforge compress`: --json results, --report tables, one-line errors."""

from __future__ import annotations

import json

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


def test_unavailable_method_is_one_line_error(tmp_path, tiny_llama_dir):
    result = runner.invoke(app, ["compress", "quantize", str(tiny_llama_dir), str(tmp_path / "o"), "--method", "gptq"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Error: --method gptq is not available")
    assert len(result.output.strip().splitlines()) == 1


def test_gguf_of_an_encoder_is_one_line_error(tmp_path, minilm_dir):
    result = runner.invoke(
        app, ["compress", "quantize", str(minilm_dir), str(tmp_path / "m.gguf"), "--method", "gguf-q8_0"]
    )
    assert result.exit_code == 2 and not (tmp_path / "m.gguf").exists()
    assert result.output.strip().startswith("Error: gguf-q8_0: model is an encoder; lmforge writes GGUF for decoders")
    assert len(result.output.strip().splitlines()) == 1
