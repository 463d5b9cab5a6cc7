import pytest

from lmforge.fileio import atomic_directory, atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_text_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_atomic_write_json_round_trips(tmp_path):
    import json

    target = atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "model.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_atomic_directory_appears_only_when_complete(tmp_path):
    target = tmp_path / "checkpoint-10"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as folder:
            (folder / "weights").write_text("partial")
            raise RuntimeError("killed")
    assert not target.exists()
    with atomic_directory(target) as folder:
        (folder / "weights").write_text("complete")
    assert (target / "weights").read_text() == "complete"
    with atomic_directory(target) as folder:
        (folder / "weights").write_text("newer")
    assert (target / "weights").read_text() == "newer"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-10"]
