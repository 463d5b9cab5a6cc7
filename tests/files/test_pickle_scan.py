"""The opcode walker: allowlist decisions, stack simulation, and robustness on hostile bytes."""

from __future__ import annotations

import io
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.files.pickle_scan import ALLOWED_GLOBALS, scan_pickle_stream
from tests.files import corpus


def _names(report) -> set[str]:
    return {finding.global_name for finding in report.findings if finding.global_name}


@pytest.mark.parametrize("protocol", range(6))
def test_os_system_is_found_in_every_protocol_with_its_offset(tmp_path, protocol):
    data = corpus.os_system(tmp_path / "canary", protocol)
    report = scan_pickle_stream(data)
    assert "posix.system" in _names(report)
    finding = next(f for f in report.findings if f.global_name == "posix.system")
    assert data[finding.offset] in (ord("c"), 0x93)  # the offset points at the GLOBAL / STACK_GLOBAL opcode
    assert finding.kind == "dangerous-global"


@pytest.mark.parametrize("protocol", range(6))
def test_plain_data_and_numpy_arrays_are_safe_in_every_protocol(protocol):
    import numpy

    data = pickle.dumps({"a": [1, 2.5, "x", b"y", None], "s": {1}, "f": frozenset({2}), "n": numpy.arange(3.0)},
                        protocol=protocol)
    report = scan_pickle_stream(data)
    assert report.findings == [] and report.complete


def test_stack_global_resolves_names_through_the_memo(tmp_path):
    report = scan_pickle_stream(corpus.stack_global_memo(tmp_path / "c"))
    assert _names(report) == {"os.system"}
    assert report.findings[0].opcode == "STACK_GLOBAL"


def test_stack_global_from_a_computed_value_cannot_be_proven_safe():
    # STACK_GLOBAL whose operands are the result of a call (here an allowlisted one): unresolvable.
    data = b"\x80\x04\x8c\x08builtins\x94\x8c\x03set\x94\x93)R\x8c\x01x\x93)R."
    report = scan_pickle_stream(data)
    assert any(f.kind == "unresolved-call" for f in report.findings)


def test_call_opcodes_on_values_that_are_not_globals_are_flagged():
    # REDUCE on a call result: torch.Size() then calling it.
    report = scan_pickle_stream(b"\x80\x02ctorch\nSize\n)R)R.")
    assert [f.opcode for f in report.findings] == ["REDUCE"]


def test_build_on_an_allowlisted_class_object_is_flagged(tmp_path):
    report = scan_pickle_stream(corpus.build_on_allowed_class(tmp_path / "c"))
    assert [f.opcode for f in report.findings] == ["BUILD"]


def test_extension_registry_codes_cannot_be_proven_safe(tmp_path):
    report = scan_pickle_stream(corpus.extension_registry(tmp_path / "c"))
    assert [f.opcode for f in report.findings] == ["EXT2"]


def test_truncated_stream_reports_its_payload_and_the_truncation(tmp_path):
    report = scan_pickle_stream(corpus.truncated_payload(tmp_path / "c"))
    assert not report.complete
    assert {f.kind for f in report.findings} == {"dangerous-global", "malformed"}


@pytest.mark.parametrize("data", [b"", b"\x80\x09N.", b"\xff", b"(N", b"h\x05.", b"0.", b"\x80\x02c\xff\xfe\nx\n."])
def test_malformed_streams_are_never_safe(data):
    report = scan_pickle_stream(data)
    assert report.findings and report.findings[-1].kind == "malformed"


def test_sniff_mode_ignores_bytes_that_are_not_a_pickle_but_keeps_gadgets(tmp_path):
    assert scan_pickle_stream(b"\x10\x20garbage", strict=False).findings == []
    assert _names(scan_pickle_stream(corpus.truncated_payload(tmp_path / "c"), strict=False)) == {"os.system"}


def test_protocol_2_python2_names_are_mapped_like_the_unpickler_does():
    report = scan_pickle_stream(pickle.dumps({1, 2}, protocol=2))  # references __builtin__.set
    assert report.findings == [] and [g.name for g in report.globals] == ["builtins.set"]


def test_allowlist_never_allows_more_than_torch_weights_only_does_except_numpy_and_frozenset():
    from torch._weights_only_unpickler import _get_allowed_globals

    torch_allowed = set(_get_allowed_globals())
    ours = {f"{module}.{name}" for module, name in ALLOWED_GLOBALS}
    extra = {name for name in ours - torch_allowed if not name.startswith("numpy")}
    assert extra == {"builtins.frozenset"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256), st.booleans())
def test_random_bytes_always_get_a_verdict(data, strict):
    report = scan_pickle_stream(data, strict=strict)
    assert report.complete or report.parse_error


def _mutations():
    import numpy

    return [pickle.dumps({"w": numpy.ones(2), "s": {1}}, protocol=p) for p in range(6)] + [
        corpus.stack_global_memo(__import__("pathlib").Path("/nonexistent"))
    ]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_mutations()), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
       st.integers(0, 400))
def test_mutated_real_pickles_never_crash_and_broken_ones_are_never_safe(base, edits, cut):
    data = bytearray(base)
    for position, value in edits:
        data[position % len(data)] = value
    data = bytes(data[: max(1, cut % (len(data) + 1))])
    report = scan_pickle_stream(data)
    if not report.complete:
        assert report.findings
    try:  # anything that would import a non-allowlisted global must have been reported
        names = set()

        class Spy(pickle.Unpickler):
            def find_class(self, module, name):
                names.add((module, name))
                raise pickle.UnpicklingError("stop")

        Spy(io.BytesIO(data)).load()
    except Exception:  # noqa: BLE001 - any failure of the real unpickler is fine here
        pass
    import _compat_pickle

    for module, name in names:
        mapped = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        if (mapped not in ALLOWED_GLOBALS) and ((module, name) not in ALLOWED_GLOBALS):
            assert report.findings


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x04\x8c\x03\xed\xa0\x80\x940cos\nsystem\n)R.",  # a lone surrogate CPython accepts (surrogatepass)
        b"]\x94(K\x01a(K\x02acos\nsystem\n.",  # APPEND onto a list below the MARK fence
    ],
)
def test_sniff_mode_keeps_walking_wherever_cpython_keeps_unpickling(data):
    assert "os.system" in _names(scan_pickle_stream(data, strict=False))


def test_sniffing_tensor_bytes_raises_no_false_alarm():
    import torch

    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float16, torch.int64, torch.uint8):
        for _ in range(200):
            values = torch.randn(256) * 50
            data = values.to(dtype).numpy().tobytes()
            assert scan_pickle_stream(data, strict=False).findings == []


def test_text_that_reads_as_an_import_but_calls_nothing_is_not_a_pickle_when_sniffed():
    text = b"click\ntorch\nnumpy>=1.26\n"  # a requirements.txt: GLOBAL lick.torch, then garbage
    assert scan_pickle_stream(text, strict=False).findings == []
    assert _names(scan_pickle_stream(text, strict=True)) == {"lick.torch"}
