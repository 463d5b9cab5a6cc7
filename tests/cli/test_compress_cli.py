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
