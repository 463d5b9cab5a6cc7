"""safe_torch_load: the gate every lmforge path uses before torch.load."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import DependencyError, FormatError, NotFoundError, UnsafeFileError
from lmforge.files import safe_load
from lmforge.files.safe_load import safe_torch_load, torch_version_tuple
from tests.files import corpus


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_benign_checkpoints_load_with_their_tensors(torch_checkpoints, kind):
    state = safe_torch_load(torch_checkpoints[kind])
    assert state["embeddings.word_embeddings.weight"].dtype == torch.bfloat16


def test_numpy_arrays_in_a_checkpoint_load_too(tmp_path):
    import numpy

    path = tmp_path / "rng_state.pth"
    torch.save({"numpy": numpy.random.get_state(), "array": numpy.arange(3.0)}, path)
    assert safe_torch_load(path)["array"].tolist() == [0.0, 1.0, 2.0]


def test_unsafe_file_is_refused_naming_the_global_and_nothing_runs(tmp_path):
    canary = tmp_path / "canary"
    path = tmp_path / "model.bin"
    path.write_bytes(
        corpus._torch_zip_bytes({"w": torch.ones(1)}, folder="odd", replace_pickle=corpus.os_system(canary, 2))
    )
    with pytest.raises(UnsafeFileError, match=r"posix\.system.*--trust-pickle"):
        safe_torch_load(path)
    assert not canary.exists()


def test_a_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeFileError, match="torch.nn.modules.linear.Linear"):
        safe_torch_load(path)


def test_trust_pickle_is_the_explicit_override(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.warns(UserWarning, match="trust-pickle"):
        assert isinstance(safe_torch_load(path, trust_pickle=True), torch.nn.Linear)


def test_old_torch_is_refused_because_of_cve_2025_32434(torch_checkpoints, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu121")
    with pytest.raises(DependencyError, match="CVE-2025-32434"):
        safe_torch_load(torch_checkpoints["zip"])
    assert torch_version_tuple("2.10.0") > safe_load.MIN_SAFE_TORCH > torch_version_tuple("2.5.1")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError):
        safe_torch_load(tmp_path / "nope.bin")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_file_torch_weights_only_cannot_parse_is_refused_with_torchs_reason(tmp_path):
    path = tmp_path / "protocol4.pt"
    torch.save({"w": torch.ones(1)}, path, pickle_protocol=4)  # FRAME opcodes: torch's weights_only loader refuses them
    with pytest.raises(FormatError, match="Unsupported operand 149"):
        safe_torch_load(path)


def test_require_safe_checks_a_whole_model_folder_before_another_loader_reads_it(tmp_path, torch_checkpoints):
    from lmforge.files.safe_load import require_safe

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(torch_checkpoints["zip"].read_bytes())
    (folder / "config.json").write_text("{}")
    require_safe(folder)
    (folder / "training_args.bin").write_bytes(corpus.os_system(tmp_path / "canary", 2))
    with pytest.raises(UnsafeFileError, match=r"training_args\.bin \(posix\.system\)"):
        require_safe(folder)
    require_safe(folder, trust_pickle=True)
