import json
import re
import struct
from pathlib import Path

from typer.testing import CliRunner

from lmforge.cli.main import app


def _run(*args: str):
    return CliRunner().invoke(app, ["inspect", *args], env={"COLUMNS": "200"})


def _error_line(result) -> str:
    """The one line a failing command prints (no traceback), checked to be exactly one."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_hub_id_resolves_in_the_cache_when_offline(monkeypatch, tmp_path: Path, minilm_dir: Path):
    snapshot = tmp_path / "hub" / "models--acme--MiniLM-L6-v2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).symlink_to(minilm_dir / name)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    result = _run("acme/MiniLM-L6-v2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_params"] == 22_713_216
    missing = _run("acme/not-cached")
    assert missing.exit_code != 0 and re.search("not in the hub cache .*HF_HUB_OFFLINE=1", missing.output)


def test_json_is_one_object_with_the_figures(minilm_dir: Path):
    result = _run(str(minilm_dir), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total_params"] == 22_713_216 and data["architecture"] == "BertModel"
    assert data["params_by_dtype"]["F32"] == 22_713_216
    assert "tensors" not in data  # only with --tensors / --filter


def test_json_tensors_with_a_filter(minilm_dir: Path):
    result = _run(str(minilm_dir), "--json", "--filter", "*.layer.0.attention.self.query.*")
    data = json.loads(result.stdout)
    assert [(t["name"], t["shape"], t["params"], t["size_bytes"]) for t in data["tensors"]] == [
        ("encoder.layer.0.attention.self.query.bias", [384], 384, 1536),
        ("encoder.layer.0.attention.self.query.weight", [384, 384], 147456, 589824),
    ]


def test_human_output_has_tables_and_summarised_vocabulary(small_gguf: Path):
    result = _run(str(small_gguf), "--tensors")
    assert result.exit_code == 0, result.output
    for expected in ("Parameters by dtype", "Q8_0", "Runtimes", "llama.cpp", "blk.0.ffn_up.weight", "string × 300"):
        assert expected in result.stdout
    assert "tok299" not in result.stdout  # a vocabulary is summarised, not dumped


def test_missing_path_is_a_not_found_error(tmp_path: Path):
    result = _run(str(tmp_path / "nope.safetensors"))
    assert "does not exist" in _error_line(result)


def test_unrecognised_bytes_are_described(tmp_path: Path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"<html><body>404</body></html>")
    result = _run(str(path))
    assert "HTML" in _error_line(result)


def test_corrupt_safetensors_names_the_problem(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)  # 8 of 16 data bytes
    result = _run(str(path))
    assert "truncated or trailing data" in _error_line(result)
