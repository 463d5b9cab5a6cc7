"""lmforge.runtime: no hub kernels unless the user asks for them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lmforge.runtime import no_hub_kernels


def test_hub_kernels_are_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    no_hub_kernels()
    assert os.environ["USE_HUB_KERNELS"] == "0"


def test_a_users_choice_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USE_HUB_KERNELS", "1")
    no_hub_kernels()
    assert os.environ["USE_HUB_KERNELS"] == "1"


def test_transformers_loads_without_kernelizing(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What failed on the H200: from_pretrained asked the kernels package for hub kernels. After lmforge's model
    loader ran, transformers' own switch says kernels are disabled for every later from_pretrained too."""
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    from transformers.integrations.hub_kernels import _kernels_enabled

    from lmforge.generate.load import load_model
    from lmforge.serve.bench import build_bench_model

    folder = build_bench_model(tmp_path / "model", hidden_size=32, layers=1)
    load_model(str(folder))
    assert not _kernels_enabled()


def test_every_cli_process_inherits_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "USE_HUB_KERNELS"}
    code = (
        "import os, sys; from lmforge.cli import main as m; sys.argv=['lmforge', '--version']\n"
        "try:\n    m.main()\nexcept SystemExit:\n    pass\nprint(os.environ.get('USE_HUB_KERNELS'))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert output.stdout.strip().splitlines()[-1] == "0"
