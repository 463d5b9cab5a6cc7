"""`lmforge scan`: table or JSON, exit codes 0 safe / 1 unsafe / 2 not proven safe."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


def _write_corpus(tmp_path):
    safe = tmp_path / "safe.pkl"
    safe.write_bytes(b"\x80\x04]\x94(K\x01K\x02e.")
    evil = tmp_path / "sub" / "evil.bin"
    evil.parent.mkdir()
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    return safe, evil


def test_safe_file_exits_0(tmp_path):
    safe, _ = _write_corpus(tmp_path)
    result = runner.invoke(app, ["scan", str(safe)])
    assert result.exit_code == 0, result.output
    assert "safe" in result.output and "1 file(s): 1 safe, 0 unsafe, 0 not proven safe" in result.output


def test_directory_with_a_payload_exits_1_and_names_global_and_offset(tmp_path):
    _write_corpus(tmp_path)
    result = runner.invoke(app, ["scan", str(tmp_path)])
    assert result.exit_code == 1
    assert "os.system" in result.output and "byte 0" in result.output


def test_json_output_for_machines(tmp_path):
    safe, evil = _write_corpus(tmp_path)
    result = runner.invoke(app, ["scan", str(safe), str(evil), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == report["exit_code"] == 1
    by_path = {item["path"]: item for item in report["files"]}
    assert by_path[str(safe)]["verdict"] == "safe"
    finding = by_path[str(evil)]["findings"][0]
    assert (finding["global_name"], finding["offset"], finding["opcode"]) == ("os.system", 0, "GLOBAL")


def test_verbose_lists_the_globals(tmp_path):
    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")
    result = runner.invoke(app, ["scan", str(tmp_path / "model.pt"), "--verbose"])
    assert result.exit_code == 0 and "torch._utils._rebuild_tensor_v2" in result.output


def test_missing_path_is_one_line_exit_2(tmp_path):
    result = runner.invoke(app, ["scan", str(tmp_path / "missing.bin")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_file_that_cannot_be_proven_safe_exits_2_and_says_why(tmp_path):
    archive = tmp_path / "weights.7z"
    archive.write_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(64))
    result = runner.invoke(app, ["scan", str(archive)])
    assert result.exit_code == 2
    assert "unproven" in result.output and "cannot open a 7z container" in result.output
    assert "0 unsafe, 1 not proven safe" in result.output


def test_a_symlink_leaving_the_folder_exits_2_and_an_unsafe_file_still_wins(tmp_path):
    folder, outside = tmp_path / "model", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "weights").symlink_to(outside, target_is_directory=True)
    result = runner.invoke(app, ["scan", str(folder), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == report["exit_code"] == 2 and report["files_unproven"] == 1
    assert "outside the scanned one" in report["files"][0]["findings"][0]["message"]
    (folder / "evil.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    assert runner.invoke(app, ["scan", str(folder)]).exit_code == 1
