"""The low-rank folder format: a rank file that cannot be read is a one-line FormatError naming it, whatever
its content, when any command loads the folder (the round trip itself: tests/compress/test_factorize.py)."""

from __future__ import annotations

import shutil

import pytest

from lmforge.errors import FormatError
from lmforge.files.lowrank import LOWRANK_FILE
from lmforge.generate.load import load_model


@pytest.mark.parametrize("content", ["{not json", '{"layers": {}}', "[]"])
def test_an_unreadable_rank_file_is_named_in_a_format_error(tmp_path, tiny_llama_dir, content):
    folder = tmp_path / "svd"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / LOWRANK_FILE).write_text(content)
    with pytest.raises(FormatError, match=f"{LOWRANK_FILE} is unreadable"):
        load_model(str(folder))
