"""lmforge.ui.workspace: every path from a form stays inside the allowed folders; pickers find what is there."""

from __future__ import annotations

import os

import pytest

from lmforge.errors import UserInputError
from tests.ui.conftest import finished_run


def test_paths_outside_the_allowed_folders_are_refused(workspace, ui_root):
    assert workspace.check(ui_root / "data" / "chats.jsonl") == (ui_root / "data" / "chats.jsonl").resolve()
    for outside in ("/etc/passwd", str(ui_root / ".." / "elsewhere"), str(workspace.runs / ".." / "x")):
        with pytest.raises(UserInputError, match="outside the folders this UI may use"):
            workspace.check(outside, must_exist=False)


def test_a_symlink_out_of_an_allowed_folder_is_refused(workspace, tmp_path):
    link = workspace.runs / "escape"
    os.symlink("/etc", link)
    with pytest.raises(UserInputError, match="outside"):
        workspace.check(link / "passwd")


def test_a_model_is_an_allowed_path_or_a_hub_id(workspace, ui_root, monkeypatch):
    tiny = ui_root / "models" / "tiny"
    assert workspace.model(str(tiny)) == str(tiny.resolve())
    assert workspace.model(" org/name@v1.0 ") == "org/name@v1.0"  # resolved (and scanned) by locate_model later
    for outside in ("/etc", "../../elsewhere/model"):
        with pytest.raises(UserInputError, match="outside"):
            workspace.model(outside)
    # A local folder spelled like a hub id is a path, as for every command: inside the allowed folders only.
    monkeypatch.chdir(ui_root.parent)
    (ui_root.parent / "org" / "name").mkdir(parents=True)
    with pytest.raises(UserInputError, match="outside"):
        workspace.model("org/name")


def test_run_names_cannot_climb_out_of_the_runs_folder(workspace):
    assert workspace.run_path("sft-1") == workspace.runs / "sft-1"
    assert workspace.run_path("exports/model") == workspace.runs / "exports" / "model"
    for bad in ("../x", "", ".hidden", "a/../../b"):
        with pytest.raises(UserInputError):
            workspace.run_path(bad)


def test_pickers_list_models_runs_data_and_files_inside_the_roots(workspace, ui_root):
    run = finished_run(workspace.runs / "quickstart" / "sft", [2.0, 1.0])
    (run / "final").mkdir()
    (run / "data").mkdir()
    (run / "data" / "internal.jsonl").write_text("{}\n")  # a run's insides are never offered as data
    assert workspace.run_folders() == [run]
    models = workspace.model_folders()
    assert ui_root / "models" / "tiny" in models and run in models
    assert ui_root / "models" / "tiny" in workspace.tokenizer_folders()
    assert workspace.data_files() == [ui_root / "data" / "chats.jsonl"]
    files = workspace.model_files()
    assert ui_root / "files" / "evil.pkl" in files and ui_root / "files" / "weights.bin" in files
    assert run / "final" in files


def test_an_allowed_folder_must_exist(tmp_path):
    from lmforge.errors import NotFoundError
    from lmforge.ui.workspace import Workspace

    with pytest.raises(NotFoundError, match="--allow"):
        Workspace.create(tmp_path / "runs", [tmp_path / "missing"])
    assert Workspace.create(tmp_path / "runs", [tmp_path]).roots == ((tmp_path / "runs").resolve(), tmp_path.resolve())
