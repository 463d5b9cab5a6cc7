"""sweep: one method at several settings, one report that draws the size/quality curve."""

from __future__ import annotations

import pytest

from lmforge.compress import sweep
from lmforge.errors import UserInputError


def test_a_prune_sweep_measures_every_setting_beside_the_original(tmp_path, tiny_llama_dir):
    report = sweep(
        tiny_llama_dir,
        tmp_path / "sweep",
        kind="prune",
        values=["0.25", "0.5"],
        options={"method": "magnitude", "structure": "mlp"},
        report_options={"limit": 2, "decode_tokens": 4},
    )
    methods = [row.method for row in report.compressed]
    assert methods == ["prune-magnitude-mlp-0.25", "prune-magnitude-mlp-0.5"]
    sizes = [report.original.size_bytes, *(row.size_bytes for row in report.compressed)]
    assert sizes == sorted(sizes, reverse=True)  # more pruning, smaller file
    assert (tmp_path / "sweep" / "report.png").is_file() and (tmp_path / "sweep" / "prune-0.5").is_dir()


def test_sweep_values_must_fit_the_kind(tmp_path, tiny_llama_dir):
    with pytest.raises(UserInputError, match="values are numbers"):
        sweep(tiny_llama_dir, tmp_path / "s", kind="factorize", values=["high"])
    with pytest.raises(UserInputError, match="unknown sweep"):
        sweep(tiny_llama_dir, tmp_path / "s", kind="distill", values=["1"])
