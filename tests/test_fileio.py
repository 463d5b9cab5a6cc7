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


@pytest.fixture
def umask_022():
    import os

    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_writes_get_the_mode_a_plain_write_would_have(tmp_path, umask_022):
    """Colleagues on a shared machine can read a run: tempfile's private 0600/0700 must not leak through."""
    import os
    import stat

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert mode(written) == mode(plain) == 0o644
    with atomic_directory(tmp_path / "final") as folder:
        (folder / "weights").write_text("w")
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    assert mode(tmp_path / "final") == mode(plain_dir) == 0o755
    os.chmod(written, 0o640)  # an existing file keeps the mode its owner gave it, as open("w") does
    atomic_write_text(written, "a: 2\n")
    assert mode(written) == 0o640
    os.umask(0o077)
    assert mode(atomic_write_text(tmp_path / "private.txt", "p")) == 0o600
