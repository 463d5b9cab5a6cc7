"""Issue 10: no verdict of "safe" that a loader disagrees with.

Classes 1-4 (zips, sniffing, headers, TorchScript) are files built as an attacker would build
them (tests/files/attacks.py), each proven live under a plain loader; class 5 is folders with
symlinks; class 6 the false alarms on ordinary torch.save output.
"""

from __future__ import annotations

import os
import pickle
import warnings

import pytest
import torch

from lmforge.files.safe_load import safe_torch_load
from lmforge.files.scan import scan_file, scan_paths
from tests.files import attacks


@pytest.fixture(scope="module")
def attack_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    canary = root / "CANARY"
    built = []
    for attack in attacks.all_attacks(canary):
        path = root / attack.name
        path.write_bytes(attack.data)
        built.append((attack, path))
    return built, canary


def test_every_class_of_the_issue_has_attacks(attack_files):
    built, _ = attack_files
    assert {attack.issue_class for attack, _ in built} == {1, 2, 3, 4}


def test_no_attack_file_is_called_safe_and_each_would_run_code(attack_files):
    built, canary = attack_files
    verdicts = {attack.name: scan_file(path).verdict for attack, path in built}
    assert verdicts == {attack.name: "unsafe" for attack, _ in built}
    assert scan_paths([path for _, path in built]).exit_code == 1
    assert not canary.exists()


def test_every_attack_payload_runs_under_a_plain_loader(attack_files, tmp_path):
    built, canary = attack_files
    results = attacks.run_live([(path, attack.live, attack.printed) for attack, path in built], canary, tmp_path)
    assert [name for name, ran in results.items() if not ran] == []


def test_structural_doubt_alone_is_exit_2_and_names_the_archive_ambiguous(tmp_path):
    """The same tricks hiding a harmless pickle: nothing would run, but the scanner cannot tell
    which member a loader reads, so it says "cannot prove safe", never "safe"."""
    harmless = pickle.dumps({"w": 2, "note": "harmless " * 8}, 2)
    for name, data in (
        ("zip64.pt", attacks.zip64_record_with_a_second_directory(tmp_path, hidden=harmless)),
        ("junk.pt", attacks.junk_offset_onto_a_harmless_directory(tmp_path, hidden=harmless)),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        assert torch.load(path, weights_only=True)["w"] == 2  # torch reads the hidden directory
        report = scan_file(path)
        assert report.verdict == "unproven", [finding.message for finding in report.findings]
        assert {finding.kind for finding in report.findings} == {"ambiguous-archive"}


# ---- class 5: folders ---------------------------------------------------------------------------
def test_a_symlinked_sub_folder_is_followed_and_one_leaving_the_folder_is_reported(tmp_path):
    canary = tmp_path / "CANARY"
    model, elsewhere = tmp_path / "model", tmp_path / "elsewhere"
    (model / "real").mkdir(parents=True)
    elsewhere.mkdir()
    (model / "real" / "model.pkl").write_bytes(attacks.payload(canary))
    (model / "link").symlink_to(model / "real", target_is_directory=True)
    (model / "loop").symlink_to(model, target_is_directory=True)
    assert attacks.run_live([(model / "link" / "model.pkl", "pickle", None)], canary, tmp_path) == {
        str(model / "link" / "model.pkl"): True
    }

    report = scan_paths([model])  # the linked folder is inside: its files are scanned (under their real path)
    assert [os.path.relpath(item.path, model) for item in report.unsafe] == ["real/model.pkl"]
    assert report.exit_code == 1

    (model / "real" / "model.pkl").unlink()
    (elsewhere / "model.pkl").write_bytes(attacks.payload(canary))
    (model / "out").symlink_to(elsewhere, target_is_directory=True)
    (model / "dangling").symlink_to(tmp_path / "missing")
    report = scan_paths([model])
    verdicts = {os.path.basename(item.path): (item.verdict, item.findings[0].message) for item in report.files}
    assert verdicts.keys() == {"out", "dangling"} and {verdict for verdict, _ in verdicts.values()} == {"unproven"}
    assert "outside the scanned one" in verdicts["out"][1] and "broken symlink" in verdicts["dangling"][1]
    assert report.exit_code == 2

    # A link to a FILE outside (a Hugging Face snapshot links each file to ../../blobs/): its bytes are scanned.
    (model / "out").unlink()
    (model / "dangling").unlink()
    (model / "weights.pkl").symlink_to(elsewhere / "model.pkl")
    report = scan_paths([model])
    assert [os.path.basename(item.path) for item in report.unsafe] == ["weights.pkl"] and report.exit_code == 1


# ---- class 6: no false alarm on what torch.save writes ---------------------------------------------
def test_torch_save_output_of_every_stem_length_is_safe_and_loads(tmp_path):
    state = {"w": torch.ones(2)}
    for length in range(1, 65):
        path = tmp_path / f"{'c' * length}.pt"
        torch.save(state, path)
        report = scan_file(path)
        assert report.verdict == "safe", (length, [finding.message for finding in report.findings])
    for name in ("checkpoint_epoch_0010.pt", "optimizer_state_00001.pt", "model_state_dict_0001.pt"):
        torch.save(state, tmp_path / name)
        assert safe_torch_load(tmp_path / name)["w"].tolist() == [1.0, 1.0]


def _every_tensor_kind() -> dict[str, object]:
    """One of every tensor torch.save writes on a CPU build (DTensor needs a process group)."""
    dtypes = (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.complex32,
        torch.complex64,
        torch.complex128,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.uint8,
        torch.uint16,
        torch.uint32,
        torch.uint64,
        torch.bool,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
        torch.float8_e4m3fnuz,
        torch.float8_e5m2fnuz,
        torch.float8_e8m0fnu,
        torch.float4_e2m1fn_x2,
        torch.bits8,
        torch.bits16,
        torch.bits1x8,
        torch.bits2x4,
        torch.bits4x2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex32, sparse CSR and nested tensors are "experimental" or "beta"
        kinds: dict[str, object] = {str(dtype): torch.empty(2, dtype=dtype) for dtype in dtypes}
        kinds |= {
            "parameter": torch.nn.Parameter(torch.ones(2)),
            "no grad parameter": torch.nn.Parameter(torch.ones(2), False),
            "requires grad": torch.ones(2, requires_grad=True),
            "view": torch.arange(10.0)[2:5],
            "transposed": torch.ones(3, 4).t(),
            "channels last": torch.ones(1, 3, 2, 2).to(memory_format=torch.channels_last),
            "meta": torch.empty(3, device="meta"),
            "scalar": torch.tensor(3.0),
            "empty": torch.empty(0, 5),
            "conjugate": torch.ones(2, dtype=torch.complex64).conj(),
            "qint8": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8),
            "quint8": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.quint8),
            "qint32": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint32),
            "quint4x2": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.quint4x2),
            "per channel": torch.quantize_per_channel(
                torch.ones(2, 3), torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.qint8
            ),
            "sparse coo": torch.eye(3).to_sparse(),
            "sparse csr": torch.eye(3).to_sparse_csr(),
            "sparse csc": torch.eye(3).to_sparse_csc(),
            "sparse bsr": torch.eye(4).to_sparse_bsr((2, 2)),
            "sparse bsc": torch.eye(4).to_sparse_bsc((2, 2)),
            "nested strided": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
            "nested jagged": torch.nested.nested_tensor([torch.ones(2, 4), torch.ones(3, 4)], layout=torch.jagged),
            "size, device, dtype, layout": (torch.Size([2, 3]), torch.device("cpu"), torch.float16, torch.sparse_coo),
        }
    return kinds


def test_every_tensor_kind_torch_save_writes_is_safe_and_lmforge_loads_it(tmp_path):
    for name, value in _every_tensor_kind().items():
        for legacy in (False, True):
            if legacy and ("jagged" in name or "meta" in name):
                continue  # torch's legacy format cannot write these
            path = tmp_path / f"{name.replace(' ', '_')}{'_legacy' if legacy else ''}.pt"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.save({"x": value}, path, _use_new_zipfile_serialization=not legacy)
            report = scan_file(path)
            assert report.verdict == "safe", (name, legacy, [finding.message for finding in report.findings])
            if not legacy:  # (torch itself cannot read back some dtypes it writes in the legacy format)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    safe_torch_load(path)


def test_the_pre_1_0_tar_format_is_read_as_torch_reads_it(tmp_path):
    """torch.load reads the benign tar the tests build; the scanner walks all six of its pickles
    (storages: count, record, views; tensors: count, record; pickle), skipping the raw bytes between."""
    path = tmp_path / "old.tar"
    path.write_bytes(attacks.pre_1_0_torch_tar())
    assert torch.load(path, weights_only=False)["w"].tolist() == [1.0, 2.0]
    report = scan_file(path)
    assert (report.verdict, report.format, report.pickle_streams) == ("safe", "pytorch-tar", 6)
