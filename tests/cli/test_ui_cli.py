"""`lmforge ui`: refuses to expose itself without a login, in one line, before anything is served."""

from __future__ import annotations

from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


def test_a_public_host_without_auth_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["ui", "--host", "0.0.0.0", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert result.output.startswith("Error: --host 0.0.0.0 makes the UI reachable from other machines")
    assert result.output.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing was created, nothing served


def test_a_malformed_login_is_refused(tmp_path):
    result = runner.invoke(app, ["ui", "--auth", "nopassword", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "--auth must be USER:PASS" in result.output


def test_help_lists_the_options():
    result = runner.invoke(app, ["ui", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--runs", "--auth", "--allow"):
        assert option in result.output
