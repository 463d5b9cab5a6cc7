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

    data = pickle.dumps(
        {"a": [1, 2.5, "x", b"y", None], "s": {1}, "f": frozenset({2}), "n": numpy.arange(3.0)}, protocol=protocol
    )
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
    """torch's list plus what torch.nested and torch._dynamo register when imported (jagged nested
    tensors): a file this scanner passes is one torch.load(weights_only=True) also accepts."""
    import importlib

    from torch._weights_only_unpickler import _get_allowed_globals, _get_user_allowed_globals

    for module in ("torch.nested", "torch._dynamo"):
        importlib.import_module(module)
    torch_allowed = set(_get_allowed_globals()) | set(_get_user_allowed_globals())
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
@given(
    st.sampled_from(_mutations()),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
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
    except Exception:
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


def test_a_stream_that_imports_and_then_breaks_reports_the_import_but_not_a_call():
    """pickle.load imports lick.torch (running the module, if one exists) before it fails: the walker
    reports what happened; scan.py decides what it means for a file or an archive member."""
    text = b"click\ntorch\nnumpy>=1.26\n"  # a requirements.txt: GLOBAL lick.torch, then garbage
    report = scan_pickle_stream(text, strict=False)
    assert not report.complete and not report.acted and _names(report) == {"lick.torch"}
    assert scan_pickle_stream(b"cos\nsystem\n(S'x'\ntR\xff", strict=False).acted


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b"0x1950A86A20F9469CFC6C", 0x1950A86A20F9469CFC6C),
        (b" 0x10", 16),
        (b"010", 8),
        (b"1_000", 1000),
        (b"12\x00junk", 12),
        (b"-0x10", -16),
        (b"0b101", 5),
        (b"99999999999999999999 ", 99999999999999999999),
    ],
)
def test_int_lines_are_read_with_cpythons_base_0_rules(line, value):
    data = b"I" + line + b"\n."
    assert pickle.loads(data) == value
    assert scan_pickle_stream(data).result_int == value


@pytest.mark.parametrize("data", [b"I08\n.", b"I1e3\n.", b"F 1.5\n.", b"F1_0\n.", b"F1e999\n.", b"Vab\\u12\n."])
def test_number_and_text_lines_cpython_rejects_end_the_stream(data):
    with pytest.raises((ValueError, OverflowError)):  # UnicodeDecodeError is a ValueError
        pickle.loads(data)
    assert not scan_pickle_stream(data, strict=False).complete


def test_a_line_over_a_mebibyte_is_read_to_its_end_not_given_up_on():
    data = b"S'" + b"x" * ((1 << 20) + 10) + b"'\n0cos\nsystem\n(S'true'\ntR."
    report = scan_pickle_stream(data, strict=False)
    assert report.complete and "os.system" in _names(report)


def test_persistent_ids_stop_a_loader_that_has_no_persistent_load():
    data = b"Pfoo\n0cos\nsystem\n(S'true'\ntR."
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)
    assert not scan_pickle_stream(data, strict=False, persistent_ids=False).complete
    assert "os.system" in _names(scan_pickle_stream(data, persistent_ids=True))  # torch's data.pkl has one


# ---- differential: the walker against pickletools.genops and CPython's own unpickler --------------
_SNIPPETS = [
    b"N",
    b"K\x05",
    b"J\x01\x00\x00\x00",
    b"I0x1f\n",
    b"I 12\n",
    b"I08\n",
    b"L5L\n",
    b"F1.5\n",
    b"F 1.5\n",
    b"Finf\n",
    b"S'abc'\n",
    b"S'a\\x\n",
    b"Vabc\n",
    b"V\\u12\n",
    b"X\x03\x00\x00\x00abc",
    b"U\x02os",
    b"C\x01z",
    b"\x8a\x01\x05",
    b"cos\nsystem\n",
    b"cbuiltins\nset\n",
    b"ccollections\nOrderedDict\n",
    b"ca b\nc\n",
    b"\x8c\x02os\x8c\x06system\x93",
    b"\x8c\x08builtins\x8c\x03set\x93",
    b"(",
    b"t",
    b")",
    b"R",
    b"b",
    b"0",
    b"1",
    b"2",
    b"a",
    b"e",
    b"l",
    b"]",
    b"}",
    b"s",
    b"u",
    b"d",
    b"q\x00",
    b"q\x01",
    b"h\x00",
    b"h\x01",
    b"p0\n",
    b"g0\n",
    b"\x94",
    b"\x80\x02",
    b"\x80\x04",
    b"Pid\n",
    b"Q",
    b"\x81",
    b"\x85",
    b"\x86",
    b"\x87",
    b"\x88",
    b"\x8f",
    b"\x90",
    b"\x91",
    b"\x92",
    b"o",
    b"i__main__\nX\n",
    b"\x82\x01",
    b".",
]


_ATOMS = [
    b"N",
    b"K\x05",
    b"J\x01\x00\x00\x00",
    b"I0x1f\n",
    b"I 12\n",
    b"I01\n",
    b"L5L\n",
    b"F1.5\n",
    b"Finf\n",
    b"S'abc'\n",
    b"Vabc\n",
    b"X\x03\x00\x00\x00abc",
    b"U\x02os",
    b"C\x01z",
    b"\x8a\x01\x05",
    b"\x88",
    b")",
    b"]",
    b"}",
    b"\x8f",
]
_CALLABLES = [
    b"cos\nsystem\n",
    b"cbuiltins\nset\n",
    b"ccollections\nOrderedDict\n",
    b"c__builtin__\nset\n",
    b"\x8c\x02os\x8c\x06system\x93",
    b"\x8c\x08builtins\x8c\x03set\x93",
    b"\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93",
]


def _values():
    """Pickle fragments that each push exactly one value: atoms, containers, calls, memo traffic."""
    return st.recursive(
        st.sampled_from(_ATOMS + _CALLABLES),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda items: b"(" + b"".join(items) + b"t"),
            st.lists(inner, max_size=3).map(lambda items: b"](" + b"".join(items) + b"e"),
            st.lists(st.tuples(inner, inner), max_size=2).map(
                lambda pairs: b"}(" + b"".join(a + b for a, b in pairs) + b"u"
            ),
            st.tuples(st.sampled_from(_CALLABLES), inner).map(lambda call: call[0] + b"(" + call[1] + b"tR"),
            st.tuples(st.sampled_from(_CALLABLES), inner).map(lambda call: call[0] + call[1] + b"\x85\x81"),
            st.tuples(inner, inner).map(lambda pair: pair[0] + pair[1] + b"b"),
            inner.map(lambda value: value + b"q\x07" + b"0h\x07"),
            inner.map(lambda value: b"Pid\n0" + value),
        ),
        max_leaves=8,
    )


def _snippet_pickles():
    """Streams that mostly parse (a value and STOP, maybe a PROTO first), then a few snippets spliced in."""
    whole = st.tuples(st.sampled_from([b"", b"\x80\x02", b"\x80\x04"]), _values()).map(
        lambda parts: parts[0] + parts[1] + b"."
    )
    return st.tuples(whole, st.lists(st.tuples(st.integers(0, 200), st.sampled_from(_SNIPPETS)), max_size=2)).map(
        lambda parts: _splice(*parts)
    )


def _splice(data: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    for position, snippet in edits:
        position %= len(data) + 1
        data = data[:position] + snippet + data[position:]
    return data


class _Stub:
    """Stands in for every class or function a pickle imports, so CPython's unpickler can run
    a hostile stream to its end without running anything: calls, BUILD, appends all succeed."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return _Stub()

    def __setstate__(self, state) -> None:
        pass

    def append(self, item) -> None:
        pass

    def extend(self, items) -> None:
        pass

    def add(self, item) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass


def _cpython(data: bytes, persistent_ids: bool) -> tuple[bool, set[tuple[str, str]], int]:
    """(completed, every (module, name) CPython imported, bytes consumed) for one real unpickle."""
    imported: set[tuple[str, str]] = set()

    class Spy(pickle.Unpickler):
        def find_class(self, module, name):
            imported.add((module, name))
            if not all(part.isidentifier() for part in f"{module}.{name}".split(".")):
                raise ModuleNotFoundError(module)  # no module has such a name
            return _Stub

    handle = io.BytesIO(data)
    spy = Spy(handle)
    if persistent_ids:
        spy.persistent_load = lambda pid: _Stub()
    try:
        spy.load()
    except Exception:  # any failure of the real unpickler ends the stream
        return False, imported, handle.tell()
    return True, imported, handle.tell()


def _mapped(module: str, name: str) -> str:
    import _compat_pickle

    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


@settings(max_examples=400, deadline=None)
@given(st.one_of(_snippet_pickles(), st.binary(max_size=64)), st.booleans())
def test_the_walker_never_stops_before_cpython_and_sees_every_import_it_makes(data, persistent_ids):
    completed, imported, _ = _cpython(data, persistent_ids)
    sniffed = scan_pickle_stream(data, strict=False, persistent_ids=persistent_ids)
    strict = scan_pickle_stream(data, strict=True, persistent_ids=persistent_ids)
    if completed:  # a stream CPython loads is one the sniffing walk also walks to its STOP
        assert sniffed.complete and strict.complete
        assert _cpython(data[: strict.end_offset], persistent_ids)[0]  # the same STOP
    seen = {ref.name for ref in strict.globals} | {ref.name for ref in sniffed.globals}
    for module, name in imported:
        assert _mapped(module, name) in seen or f"{module}.{name}" in seen
        if (module, name) not in ALLOWED_GLOBALS and not is_allowed(_mapped(module, name)):
            assert strict.findings


def is_allowed(full_name: str) -> bool:
    module, _, name = full_name.rpartition(".")
    return (module, name) in ALLOWED_GLOBALS


@settings(max_examples=300, deadline=None)
@given(st.one_of(_snippet_pickles(), st.sampled_from(_mutations())), st.integers(0, 64))
def test_the_walker_decodes_opcodes_where_pickletools_genops_does(data, cut):
    """Where both decoders agree on the bytes, they see the same opcodes: every GLOBAL and INST
    that genops decodes before the walker stops is one the walker reports, and a stream the walker
    completes ends at the STOP genops finds."""
    import pickletools

    data = data[: max(1, len(data) - cut)] if cut < 8 else data
    report = scan_pickle_stream(data, strict=True)
    walked_to = report.end_offset if report.complete else report.findings[-1].offset if report.findings else 0
    global_offsets = {ref.offset for ref in report.globals}
    try:
        for opcode, _, position in pickletools.genops(data):
            if position >= walked_to:
                break
            if opcode.name in ("GLOBAL", "INST"):
                assert position in global_offsets
            if opcode.name == "STOP":
                assert report.complete and report.end_offset == position + 1
                break
    except (ValueError, UnicodeDecodeError):  # genops is stricter or looser than CPython on a few text opcodes
        pass
