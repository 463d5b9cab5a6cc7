"""The Files tab's callbacks: inspect and scan (nothing is unpickled), an upload scanned first, convert."""

from __future__ import annotations

import shutil

from lmforge.ui import files_tab


def test_a_safe_checkpoint_scans_safe_and_inspects_without_loading(workspace, ui_root):
    scan = files_tab.scan_view(workspace, str(ui_root / "files" / "weights.bin"), None)
    assert "lmf-good'>safe</span>: every file is proven safe" in scan.verdict
    assert "| weights.bin | pytorch-zip |" in scan.details and "torch._utils._rebuild_tensor_v2" in scan.details
    assert scan.table.empty
    inspected = files_tab.inspect_view(workspace, str(ui_root / "files" / "weights.bin"), None)
    assert "safety <span class='lmf-good'>safe</span>" in inspected.verdict
    assert "format **torch-zip**" in inspected.details and "**16 parameters**" in inspected.details
    assert set(inspected.table["tensor"]) == {"weight", "bias"}


def test_an_uploaded_payload_is_unsafe_and_never_runs(workspace, ui_root, tmp_path):
    upload = tmp_path / "upload" / "model.pkl"  # where gradio keeps an upload: outside the allowed folders
    upload.parent.mkdir()
    shutil.copy(ui_root / "files" / "evil.pkl", upload)
    scan = files_tab.scan_view(workspace, "", str(upload))
    assert "lmf-bad'>unsafe</span>: loading it would run code; do not load it" in scan.verdict
    assert scan.table.to_dict("records")[0]["global"] == "posix.system"
    inspected = files_tab.inspect_view(workspace, "", str(upload))
    assert "safety <span class='lmf-bad'>unsafe</span>" in inspected.verdict
    refused = files_tab.convert_view(workspace, "", str(upload), "safetensors", "f16", "")
    assert refused.verdict.startswith("**Error:**") and "not proven safe to load" in refused.verdict
    assert not (ui_root / "files" / "CANARY").exists()  # the payload never ran
    assert not (workspace.runs / "exports" / "model-converted").exists()


def test_a_file_that_cannot_be_proven_safe_says_so(workspace, ui_root, tmp_path):
    """Scan exit code 2 (cannot prove safe) is neither 'safe' nor 'unsafe': a pickle that does not parse."""
    import pickle

    broken = tmp_path / "broken.pkl"
    broken.write_bytes(pickle.dumps({"a": 1})[:-3])
    scan = files_tab.scan_view(workspace, "", str(broken))
    assert scan.verdict == (
        "### scan: <span class='lmf-bad'>cannot prove safe</span>: something could not be proven "
        "safe or read (nothing unsafe found); do not load it"
    )
    assert "| broken.pkl | other | <span class='lmf-bad'>cannot prove safe</span> |" in scan.details
    assert scan.table.to_dict("records")[0]["kind"] == "malformed"


def test_a_hub_id_is_scanned_where_loading_would_fetch_it(workspace, ui_root, monkeypatch):
    from lmforge.hub import reference

    asked = []

    def locate(text, need):
        asked.append((text, need))
        return reference.ModelRef(text, "hub", ui_root / "files", "org/files")

    monkeypatch.setattr(reference, "locate_model", locate)
    scan = files_tab.scan_view(workspace, "org/files", None)
    assert asked == [("org/files", "any")]  # its files, never a load
    assert "lmf-bad'>unsafe</span>" in scan.verdict and "evil.pkl" in scan.details


def test_convert_writes_under_the_runs_folder_and_checks_paths(workspace, ui_root):
    view = files_tab.convert_view(
        workspace, str(ui_root / "files" / "weights.bin"), None, "auto (from the name)", "f16", "weights.safetensors"
    )
    target = workspace.runs / "exports" / "weights.safetensors"
    assert f"converted to **safetensors**: `{target}` (read back and verified)" in view.verdict
    assert target.is_file()
    assert "outside" in files_tab.scan_view(workspace, "/etc/passwd", None).verdict
    assert files_tab.scan_view(workspace, "", None).verdict == "**Error:** choose a file or folder, or upload a file"
