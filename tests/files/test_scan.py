"""scan_file / scan_path over the generated corpus: no miss, no false alarm, nothing ever runs."""

from __future__ import annotations

from pathlib import Path

from lmforge.files.scan import scan_file, scan_path
from tests.files import corpus
from tests.files.attacks import run_live


def test_every_group_of_the_corpus_gets_its_right_answer_and_nothing_runs(scan_corpus):
    """malicious: unsafe (exit 1); unprovable: not proven safe (exit 2); benign: safe (exit 0)."""
    files, canary = scan_corpus
    expected = {corpus.MALICIOUS: "unsafe", corpus.UNPROVABLE: "unproven", corpus.BENIGN: "safe"}
    wrong = [
        (item.description, report.verdict, [finding.message for finding in report.findings][:2])
        for item in files
        if (report := scan_file(item.path)).verdict != expected[item.group]
    ]
    assert wrong == []
    counts = {group: sum(item.group == group for item in files) for group in expected}
    assert counts[corpus.MALICIOUS] >= 30 and counts[corpus.UNPROVABLE] >= 3 and counts[corpus.BENIGN] >= 25
    assert not canary.exists()


def test_every_malicious_payload_runs_under_a_plain_loader(scan_corpus, tmp_path):
    """Guards against an inert corpus: each malicious file's payload runs, in a subprocess, under the
    loader named in its `live` (pickle.load, torch.load(weights_only=False), numpy.load(allow_pickle=True)...)."""
    files, canary = scan_corpus
    malicious = [(item.path, item.live, item.printed) for item in files if item.malicious]
    results = run_live(malicious, canary, tmp_path)
    assert [path for path, ran in results.items() if not ran] == []


def test_findings_name_the_member_and_offset(scan_corpus):
    files, _ = scan_corpus
    nested = next(item for item in files if item.path.name == "nested.zip")
    finding = scan_file(nested.path).findings[0]
    assert finding.global_name == "posix.system"
    assert finding.member == "outer/checkpoint.zip!inner/model.pt!archive/data.pkl"
    assert finding.offset == 2 and finding.opcode == "GLOBAL" and finding.severity == "unsafe"


def test_legacy_torch_file_scans_all_five_pickles(torch_checkpoints):
    report = scan_file(torch_checkpoints["legacy"])
    assert (report.format, report.verdict, report.pickle_streams) == ("pytorch-legacy", "safe", 5)
    assert "torch._utils._rebuild_tensor_v2" in report.globals


def test_non_pickle_formats_are_safe_by_construction(small_gguf, tiny_onnx, minilm_dir):
    formats = {
        scan_file(path).format: scan_file(path).verdict
        for path in (small_gguf, tiny_onnx, Path(minilm_dir) / "model.safetensors")
    }
    assert formats == {"gguf": "safe", "onnx": "safe", "safetensors": "safe"}


def test_polyglot_with_gguf_magic_that_unpickles_to_a_payload_is_unsafe(tmp_path):
    # 'G' is BINFLOAT: pickle.load reads "GGUF\x03..." as a float, pops it, then runs os.system.
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00\x00" + b"0cos\nsystem\n(S'true'\ntR." + b"\x00" * 64)
    report = scan_file(path)
    assert report.verdict == "unsafe" and report.findings[0].global_name == "os.system"


def test_directories_are_scanned_recursively_and_exit_codes_follow_the_worst(tmp_path, torch_checkpoints):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "model.bin").write_bytes(torch_checkpoints["zip"].read_bytes())
    (tmp_path / "config.json").write_text("{}")
    report = scan_path(tmp_path)
    assert len(report.files) == 2 and report.exit_code == 0
    (tmp_path / "sub" / "evil.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    assert scan_path(tmp_path).exit_code == 1


def _sparse_zip_with_huge_stored_member(path: Path, member_bytes: int) -> None:
    """A torch-style zip whose tensor member is `member_bytes` of (sparse) zeros, written by hand."""
    import struct
    import zlib

    pickle_body = b"\x80\x02}q\x00."
    entries, offset = [], 0
    with open(path, "wb") as handle:
        for name, size in ((b"archive/data.pkl", len(pickle_body)), (b"archive/data/0", member_bytes)):
            crc = zlib.crc32(pickle_body) if size == len(pickle_body) else 0
            handle.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, size, size, len(name), 0) + name)
            if size == len(pickle_body):
                handle.write(pickle_body)
            else:
                handle.seek(size, 1)
            entries.append((name, size, crc, offset))
            offset = handle.tell()
        directory_start = offset
        for name, size, crc, local in entries:
            handle.write(
                struct.pack(
                    "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, size, size, len(name), 0, 0, 0, 0, 0, local
                )
                + name
            )
        directory_size = handle.tell() - directory_start
        handle.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 2, 2, directory_size, directory_start, 0))


def test_a_3_gib_checkpoint_is_scanned_in_place_without_copying_its_tensors(tmp_path):
    import resource

    path = tmp_path / "huge.bin"
    _sparse_zip_with_huge_stored_member(path, 3 << 30)
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = scan_file(path)
    assert (report.format, report.verdict) == ("pytorch-zip", "safe")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib < 1 << 20  # well under 1 GiB more


def test_a_file_that_cannot_be_read_is_an_error_not_safe(tmp_path):
    report = scan_file(tmp_path)  # a directory where a file was expected: cannot be read
    assert report.verdict == "error" and report.error


def _container_seeds() -> list[bytes]:
    import gzip
    import io

    import numpy
    import torch

    from tests.files.attacks import pre_1_0_torch_tar

    zipped, legacy, npz = io.BytesIO(), io.BytesIO(), io.BytesIO()
    torch.save({"a": torch.ones(3), "b": torch.zeros(2)}, zipped)
    torch.save({"a": torch.ones(3)}, legacy, _use_new_zipfile_serialization=False)
    numpy.savez_compressed(npz, a=numpy.arange(10))
    return [
        zipped.getvalue(),
        legacy.getvalue(),
        npz.getvalue(),
        gzip.compress(zipped.getvalue()),
        corpus.npy_object_array(1),
        pre_1_0_torch_tar(),
    ]


def test_mutated_containers_always_get_a_verdict():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from lmforge.files.scan import scan_bytes

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from(_container_seeds()),
        st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8),
        st.floats(0.05, 1.0),
    )
    def check(base, edits, keep):
        data = bytearray(base)
        for position, value in edits:
            data[position % len(data)] = value
        file_format, sink = scan_bytes(bytes(data[: max(1, int(len(data) * keep))]))
        assert isinstance(file_format, str) and file_format
        # Every finding says what and why, so a mangled file's verdict can be explained.
        assert all(finding.kind and finding.message for finding in sink.findings)

    check()


def test_millions_of_tiny_concatenated_pickles_end_in_a_limit_not_a_verdict_of_safe():
    from lmforge.files.scan import MAX_STREAMS_PER_BLOB, scan_bytes

    _, sink = scan_bytes(b"\x80\x02N." * (MAX_STREAMS_PER_BLOB * 3))
    assert [(finding.kind, finding.severity) for finding in sink.findings] == [("limit", "unproven")]
    assert sink.streams == MAX_STREAMS_PER_BLOB and sink.verdict() == "unproven"


def test_nested_decompression_bombs_share_one_budget(tmp_path):
    import io
    import zipfile

    from lmforge.files.scan import scan_bytes

    def deflated_zip(members: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, body in members.items():
                archive.writestr(name, body)
        return out.getvalue()

    inner = deflated_zip({f"zeros{i}": b"\x00" * 200_000 for i in range(4)})
    outer = deflated_zip({f"inner{i}.zip": inner for i in range(8)})
    _, sink = scan_bytes(outer, max_decompressed_bytes=1_000_000)
    assert any("more than" in finding.message for finding in sink.findings) and sink.verdict() == "unproven"
    _, roomy = scan_bytes(outer, max_decompressed_bytes=50_000_000)
    assert roomy.findings == []
