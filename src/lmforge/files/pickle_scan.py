"""Decide whether one pickle stream is safe to load, without executing any of it.

The walker decodes every opcode itself (no pickletools, no unpickler) and simulates the
unpickler's stack, marks and memo just far enough to know which globals are imported and what
each call opcode calls. Safe means: every imported global is on an allowlist (the torch tensor
rebuild functions, storage types and dtypes, collections.OrderedDict, the numpy array
reconstructors and a few builtins), and every call opcode (REDUCE, BUILD, INST, OBJ, NEWOBJ,
NEWOBJ_EX) acts on a value that resolves to one of them. Anything the walker cannot resolve,
a truncated or malformed stream, an unknown opcode: "cannot prove safe", never skipped.

An allowlist, not a denylist: public denylist scanners have had dozens of bypasses, each a new
standard-library gadget. The denylist below only labels findings ("dangerous" vs "unknown").

Two modes. `strict` is for bytes a loader will unpickle (a .pkl member): every problem is a
finding. Sniff mode (`strict=False`) is for bytes that may or may not be a pickle (any file, a
tensor storage member, trailing bytes): the walk stops where CPython's unpickler would raise, and
the report says what happened before that point (`acted`: a call or a class mutation off the
allowlist; `findings`: every import off the allowlist). scan.py decides what a broken stream
means for the file; the walker never drops a finding, and it never stops earlier than CPython
(no length limits: a long line is read to its end, as the unpickler reads it).
"""

from __future__ import annotations

import codecs
import re
import struct
from dataclasses import dataclass, field

# Globals a real checkpoint needs. Derived from torch's own weights_only allowlist
# (torch/_weights_only_unpickler.py `_get_allowed_globals`, torch 2.13), restricted to what
# CPU/GPU dense checkpoints reference, plus the numpy array reconstructors (numpy 1.x `numpy.core`
# and numpy 2.x `numpy._core` names) that numpy.save/torch.save write for arrays.
_STORAGE_KINDS = [
    "Double",
    "Float",
    "Half",
    "BFloat16",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
    "ComplexDouble",
    "ComplexFloat",
    "QUInt8",
    "QInt8",
    "QInt32",
    "QUInt4x2",
    "QUInt2x4",
]
_TENSOR_KINDS = ["Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"]
_DTYPES = [
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "complex128",
    "complex64",
    "complex32",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "bits8",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    *[f"int{bits}" for bits in range(1, 8)],
    *[f"uint{bits}" for bits in range(1, 8)],
]
_REBUILD_FUNCTIONS = [
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_qtensor",
    "_rebuild_sparse_tensor",
    "_rebuild_nested_tensor",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_wrapper_subclass",
    "_rebuild_device_tensor_from_numpy",
    "_rebuild_device_tensor_from_cpu_tensor",
]
_NUMPY_FUNCTIONS = ["multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer"]

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        ("collections", "OrderedDict"),
        ("collections", "Counter"),
        ("builtins", "set"),
        ("builtins", "frozenset"),  # not in torch's list; as inert as set (the FROZENSET opcode's type)
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("_codecs", "encode"),
        ("torch", "Size"),
        ("torch", "Tensor"),
        ("torch", "device"),
        ("torch.nn.parameter", "Parameter"),
        ("torch.serialization", "_get_layout"),
        ("torch.storage", "TypedStorage"),
        ("torch.storage", "UntypedStorage"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        *[("torch", f"{kind}Storage") for kind in _STORAGE_KINDS],
        *[("torch.cuda", f"{kind}Storage") for kind in _STORAGE_KINDS if not kind.startswith("Q")],
        *[("torch", f"{kind}Tensor") for kind in _TENSOR_KINDS],
        *[("torch", dtype) for dtype in _DTYPES],
        *[
            ("torch", scheme)
            for scheme in (
                "per_tensor_affine",
                "per_tensor_symmetric",
                "per_channel_affine",
                "per_channel_symmetric",
                "per_channel_affine_float_qparams",
            )
        ],
        *[("torch._utils", name) for name in _REBUILD_FUNCTIONS],
        # Jagged nested tensors: torch's weights_only loader accepts these once torch.nested and
        # torch._dynamo are imported (they register them with add_safe_globals).
        ("torch.nested._internal.nested_tensor", "NestedTensor"),
        ("torch.nested._internal.nested_tensor", "_rebuild_njt"),
        ("torch._dynamo.decorators", "_DimRange"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *[
            (f"{package}.{path.rsplit('.', 1)[0]}", path.rsplit(".", 1)[1])
            for package in ("numpy.core", "numpy._core")
            for path in _NUMPY_FUNCTIONS
        ],
    ]
)

# Only labels a finding as "dangerous" (known code-execution gadget) rather than "unknown"; the
# verdict never depends on it.
_DANGEROUS_MODULE_ROOTS = frozenset(
    [
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "runpy",
        "webbrowser",
        "socket",
        "shutil",
        "importlib",
        "pty",
        "ctypes",
        "pickle",
        "_pickle",
        "marshal",
        "code",
        "codeop",
        "commands",
        "asyncio",
        "multiprocessing",
        "urllib",
        "requests",
        "http",
        "ftplib",
        "smtplib",
        "telnetlib",
        "operator",
        "functools",
        "types",
        "platform",
        "pdb",
        "timeit",
        "builtins",
        "__builtin__",
        "_io",
        "io",
        "torch.hub",
        "torch.jit",
        "torch._dynamo",
        "numpy.testing",
    ]
)

MAX_FINDINGS_PER_STREAM = 100
_MAX_TRACKED_STRING_BYTES = 4096  # longer strings cannot be module/attribute names worth resolving
_MAX_LINE_COPY_BYTES = 1 << 20  # longer text lines are read past, never copied (a 3 GiB line must not cost 3 GiB)
_HIGHEST_PROTOCOL = 5  # pickle.HIGHEST_PROTOCOL in Python 3.8-3.13


@dataclass(frozen=True)
class Finding:
    """One reason a file is not proven safe. Offsets are bytes from the start of `member` (or the file)."""

    kind: str  # dangerous-global | unknown-global | unresolved-call | code | malformed | unreadable | ambiguous-archive | limit | link
    message: str
    offset: int | None = None
    opcode: str | None = None
    global_name: str | None = None
    member: str | None = None
    severity: str = "unsafe"  # unsafe: code would run (exit 1); unproven: cannot prove safe (exit 2)


@dataclass(frozen=True)
class GlobalRef:
    """A global the stream imports, by its resolved module.name and where its opcode starts."""

    name: str
    offset: int
    opcode: str
    allowed: bool


@dataclass
class StreamReport:
    """What one pickle stream (from a PROTO or first opcode up to its STOP) imports and calls."""

    start_offset: int
    end_offset: int | None  # offset just past STOP; None when the stream never completed
    protocol: int
    globals: list[GlobalRef] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    parse_error: str | None = None
    result_int: int | None = None  # the stream's value when it is an int (legacy torch magic number)
    result_from_call: bool = False  # the value came from a call: it could compare equal to anything
    acted: bool = False  # a call or class mutation off the allowlist happened before the stream ended
    opcode_count: int = 0

    @property
    def complete(self) -> bool:
        return self.end_offset is not None


# ---- simulated values -------------------------------------------------------------------------
class _Value:
    __slots__ = ()


class _Str(_Value):
    """A str constant; text None when it is too long or undecodable to track."""

    __slots__ = ("text",)

    def __init__(self, text: str | None) -> None:
        self.text = text


class _Int(_Value):
    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        self.number = number


class _Global(_Value):
    __slots__ = ("allowed", "name")

    def __init__(self, name: str, allowed: bool) -> None:
        self.name = name
        self.allowed = allowed


class _Made(_Value):
    """The result of a call: an object whose type the scanner knows came from an allowlisted callable."""

    __slots__ = ()


class _Opaque(_Value):
    """Constants, containers, persistent ids: never callable, never a name."""

    __slots__ = ()


_OPAQUE = _Opaque()
_MADE = _Made()


class _StreamError(Exception):
    """The unpickler would raise here: the stream stops (and, in strict mode, is not proven safe)."""


# ---- opcode table ------------------------------------------------------------------------------
# Argument kinds follow pickletools' ArgumentDescriptor names (Lib/pickletools.py). _TWO_LINES
# (GLOBAL, INST) is read by those opcodes' handlers.
_NONE, _U1, _U2, _I4, _U4, _U8, _F8, _LINE, _TWO_LINES = range(9)
_LEN_U1, _LEN_I4, _LEN_U4, _LEN_U8 = range(9, 13)

_OPCODES: dict[int, tuple[str, int]] = {
    ord(code): (name, arg)
    for code, name, arg in [
        ("(", "MARK", _NONE),
        (".", "STOP", _NONE),
        ("0", "POP", _NONE),
        ("1", "POP_MARK", _NONE),
        ("2", "DUP", _NONE),
        ("F", "FLOAT", _LINE),
        ("I", "INT", _LINE),
        ("J", "BININT", _I4),
        ("K", "BININT1", _U1),
        ("L", "LONG", _LINE),
        ("M", "BININT2", _U2),
        ("N", "NONE", _NONE),
        ("P", "PERSID", _LINE),
        ("Q", "BINPERSID", _NONE),
        ("R", "REDUCE", _NONE),
        ("S", "STRING", _LINE),
        ("T", "BINSTRING", _LEN_I4),
        ("U", "SHORT_BINSTRING", _LEN_U1),
        ("V", "UNICODE", _LINE),
        ("X", "BINUNICODE", _LEN_U4),
        ("a", "APPEND", _NONE),
        ("b", "BUILD", _NONE),
        ("c", "GLOBAL", _TWO_LINES),
        ("d", "DICT", _NONE),
        ("}", "EMPTY_DICT", _NONE),
        ("e", "APPENDS", _NONE),
        ("g", "GET", _LINE),
        ("h", "BINGET", _U1),
        ("i", "INST", _TWO_LINES),
        ("j", "LONG_BINGET", _U4),
        ("l", "LIST", _NONE),
        ("]", "EMPTY_LIST", _NONE),
        ("o", "OBJ", _NONE),
        ("p", "PUT", _LINE),
        ("q", "BINPUT", _U1),
        ("r", "LONG_BINPUT", _U4),
        ("s", "SETITEM", _NONE),
        ("t", "TUPLE", _NONE),
        (")", "EMPTY_TUPLE", _NONE),
        ("u", "SETITEMS", _NONE),
        ("G", "BINFLOAT", _F8),
        ("\x80", "PROTO", _U1),
        ("\x81", "NEWOBJ", _NONE),
        ("\x82", "EXT1", _U1),
        ("\x83", "EXT2", _U2),
        ("\x84", "EXT4", _I4),
        ("\x85", "TUPLE1", _NONE),
        ("\x86", "TUPLE2", _NONE),
        ("\x87", "TUPLE3", _NONE),
        ("\x88", "NEWTRUE", _NONE),
        ("\x89", "NEWFALSE", _NONE),
        ("\x8a", "LONG1", _LEN_U1),
        ("\x8b", "LONG4", _LEN_I4),
        ("B", "BINBYTES", _LEN_U4),
        ("C", "SHORT_BINBYTES", _LEN_U1),
        ("\x8c", "SHORT_BINUNICODE", _LEN_U1),
        ("\x8d", "BINUNICODE8", _LEN_U8),
        ("\x8e", "BINBYTES8", _LEN_U8),
        ("\x8f", "EMPTY_SET", _NONE),
        ("\x90", "ADDITEMS", _NONE),
        ("\x91", "FROZENSET", _NONE),
        ("\x92", "NEWOBJ_EX", _NONE),
        ("\x93", "STACK_GLOBAL", _NONE),
        ("\x94", "MEMOIZE", _NONE),
        ("\x95", "FRAME", _U8),
        ("\x96", "BYTEARRAY8", _LEN_U8),
        ("\x97", "NEXT_BUFFER", _NONE),
        ("\x98", "READONLY_BUFFER", _NONE),
    ]
}
_FIXED_SIZES = {_U1: 1, _U2: 2, _I4: 4, _U4: 4, _U8: 8, _F8: 8}
_LENGTH_FORMATS = {_LEN_U1: "<B", _LEN_I4: "<i", _LEN_U4: "<I", _LEN_U8: "<Q"}
_UNICODE_OPCODES = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
# Python 3 decodes protocol 0-2 str pickles (STRING, BINSTRING) to str by default, so they can name globals.
_LEGACY_STRING_OPCODES = {"BINSTRING", "SHORT_BINSTRING"}


def is_allowed_global(module: str, name: str) -> bool:
    return (module, name) in ALLOWED_GLOBALS


def _is_dangerous(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[: i + 1]) in _DANGEROUS_MODULE_ROOTS for i in range(len(parts)))


def _looks_importable(module: str, name: str) -> bool:
    """True when the unpickler could plausibly import it: dotted identifiers on both sides."""
    return all(part.isidentifier() for part in module.split(".")) and all(
        part.isidentifier() for part in name.split(".")
    )


def _fix_py2_name(module: str, name: str) -> tuple[str, str]:
    # pickle.Unpickler.find_class maps Python 2 names (e.g. __builtin__.set) when protocol < 3.
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _Walker:
    def __init__(self, data, start: int, end: int, strict: bool, persistent_ids: bool) -> None:
        self.data = data
        self.pos = start
        self.end = end
        self.strict = strict
        self.persistent_ids = persistent_ids
        self.stack: list[_Value] = []
        self.marks: list[int] = []
        self.memo: dict[int, _Value] = {}
        self.report = StreamReport(start_offset=start, end_offset=None, protocol=0)
        self.op_offset = start
        self.op_name = ""
        self.line_span = (start, start)
        self.acted = False  # a call or a class mutation on a global off the allowlist (or unresolved) happened

    # -- reading -------------------------------------------------------------------------------
    def _read(self, size: int) -> bytes:
        if size < 0 or self.pos + size > self.end:
            raise _StreamError(f"truncated {self.op_name} at byte {self.op_offset}: needs {size} bytes")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return bytes(chunk)

    def _readline(self) -> bytes | None:
        """The next line without its newline; None when it is longer than _MAX_LINE_COPY_BYTES.

        No length bound on reading: the unpickler reads a line of any length, so a bound would let
        a payload hide behind one long line. A very long line is read past, not copied: each
        opcode then decides without its text (see _loop), never by stopping early.
        """
        newline = self.data.find(b"\n", self.pos, self.end)
        if newline < 0:
            # At end of input CPython's unpickler takes the rest as the line and drops its last byte
            # as if it were the newline (_pickle.c _Unpickler_Readline + `len - 1`): mirror that.
            if self.pos >= self.end:
                raise _StreamError(f"truncated {self.op_name} at byte {self.op_offset}: line has no end")
            newline = self.end - 1
        start, self.pos = self.pos, newline + 1
        self.line_span = (start, newline)
        if newline - start > _MAX_LINE_COPY_BYTES:
            return None
        return bytes(self.data[start:newline])

    def _skip_counted(self, arg_kind: int) -> tuple[int, int]:
        """Returns (offset, length) of a length-prefixed argument without copying it."""
        fmt = _LENGTH_FORMATS[arg_kind]
        (length,) = struct.unpack(fmt, self._read(struct.calcsize(fmt)))
        if length < 0 or self.pos + length > self.end:
            raise _StreamError(f"truncated {self.op_name} at byte {self.op_offset}: length {length} past end")
        offset = self.pos
        self.pos += length
        return offset, length

    # -- stack (mirrors CPython's _pickle.c: MARK sets a fence that pops cannot cross) ------------
    def _fence(self) -> int:
        return self.marks[-1] if self.marks else 0

    def _pop(self) -> _Value:
        if len(self.stack) <= self._fence():
            raise _StreamError(f"stack underflow at {self.op_name} (byte {self.op_offset})")
        return self.stack.pop()

    def _top(self) -> _Value:
        if len(self.stack) <= self._fence():
            raise _StreamError(f"stack underflow at {self.op_name} (byte {self.op_offset})")
        return self.stack[-1]

    def _target(self) -> _Value:
        """The object APPEND/SETITEM(S)/ADDITEMS act on: CPython reads it below the MARK fence too."""
        if not self.stack:
            raise _StreamError(f"stack underflow at {self.op_name} (byte {self.op_offset})")
        return self.stack[-1]

    def _pop_mark(self) -> list[_Value]:
        if not self.marks:
            raise _StreamError(f"{self.op_name} without MARK at byte {self.op_offset}")
        mark = self.marks.pop()
        items = self.stack[mark:]
        del self.stack[mark:]
        return items

    # -- findings ------------------------------------------------------------------------------
    def _finding(self, kind: str, message: str, global_name: str | None = None, severity: str = "unsafe") -> None:
        findings = self.report.findings
        if len(findings) < MAX_FINDINGS_PER_STREAM:
            findings.append(Finding(kind, message, self.op_offset, self.op_name, global_name, severity=severity))
        elif len(findings) == MAX_FINDINGS_PER_STREAM:
            findings.append(
                Finding(
                    "truncated-report", f"more than {MAX_FINDINGS_PER_STREAM} findings; rest omitted", severity=severity
                )
            )

    def _import(self, module: str, name: str) -> _Global:
        if self.report.protocol < 3:
            module, name = _fix_py2_name(module, name)
        full = f"{module}.{name}"
        allowed = is_allowed_global(module, name)
        self.report.globals.append(GlobalRef(full, self.op_offset, self.op_name, allowed))
        if not allowed and not self.strict and not _looks_importable(module, name):
            raise _StreamError(f"{self.op_name} of a name no module has, at byte {self.op_offset}")
        if not allowed:
            kind = (
                "dangerous-global"
                if _is_dangerous(module) or module in ("builtins", "__builtin__")
                else "unknown-global"
            )
            self._finding(kind, f"imports {full}, which is not on the allowlist", full)
        return _Global(full, allowed)

    def _unresolved(self, what: str) -> _Global:
        self._finding("unresolved-call", f"{self.op_name} {what}: cannot prove safe")
        return _Global("<unresolved>", False)

    def _call(self, callable_value: _Value) -> _Value:
        if not (isinstance(callable_value, _Global) and callable_value.allowed):
            self.acted = True
        if not isinstance(callable_value, _Global):
            if not self.strict and not isinstance(callable_value, _Made):
                # A constant, container or persistent id is not callable: the unpickler raises here.
                raise _StreamError(f"{self.op_name} on a value that cannot be called (byte {self.op_offset})")
            self._finding("unresolved-call", f"{self.op_name} calls a value that is not an allowlisted global")
        return _MADE

    def _method_target(self, target: _Value) -> None:
        # APPEND/SETITEM/BUILD call methods of their target; on a class object that means class attributes.
        if isinstance(target, _Global):
            self.acted = True
            self._finding("unresolved-call", f"{self.op_name} on the global {target.name} itself", target.name)

    def _string(self, offset: int, length: int, encoding: str) -> _Value:
        if length > _MAX_TRACKED_STRING_BYTES:
            return _Str(None)
        raw = bytes(self.data[offset : offset + length])
        try:
            # CPython decodes BINUNICODE with "surrogatepass" (_pickle.c load_binunicode).
            return _Str(raw.decode(encoding, "surrogatepass" if encoding == "utf-8" else "strict"))
        except UnicodeDecodeError as error:
            if encoding == "utf-8":
                raise _StreamError(f"{self.op_name} at byte {self.op_offset} is not UTF-8") from error
            return _Str(None)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> StreamReport:
        try:
            self._loop()
        except _StreamError as error:
            self.report.parse_error = str(error)
            if self.strict:
                self._finding("malformed", f"{error}; cannot prove safe", severity="unproven")
        self.report.acted = self.acted
        return self.report

    def _loop(self) -> None:
        stack = self.stack
        while True:
            if self.pos >= self.end:
                self.op_offset, self.op_name = self.pos, "end"
                raise _StreamError(f"stream ends at byte {self.pos} without STOP")
            self.op_offset = self.pos
            code = self.data[self.pos]
            entry = _OPCODES.get(code)
            if entry is None:
                self.op_name = f"0x{code:02x}"
                raise _StreamError(f"unknown opcode 0x{code:02x} at byte {self.pos}")
            self.pos += 1
            name, arg_kind = entry
            self.op_name = name
            self.report.opcode_count += 1

            if name in ("PERSID", "BINPERSID") and not self.persistent_ids:
                # pickle.load without a persistent_load raises UnpicklingError before reading the id
                raise _StreamError(f"{name} at byte {self.op_offset}, and this loader has no persistent_load")
            argument: bytes | None = None
            counted: tuple[int, int] | None = None
            if arg_kind in _FIXED_SIZES:
                argument = self._read(_FIXED_SIZES[arg_kind])
            elif arg_kind == _LINE:
                argument = self._readline()
            elif arg_kind in _LENGTH_FORMATS:
                counted = self._skip_counted(arg_kind)

            # Memo traffic is about half of a real checkpoint's opcodes: handle it first.
            if name in ("BINPUT", "LONG_BINPUT", "PUT"):
                index = self._memo_index(argument)
                if index < 0:
                    raise _StreamError(f"negative PUT index at byte {self.op_offset}")
                self.memo[index] = self._top()
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                index = self._memo_index(argument)
                if index not in self.memo:
                    raise _StreamError(f"{name} of memo {index} that was never stored (byte {self.op_offset})")
                stack.append(self.memo[index])
            elif name == "STOP":
                value = self._pop()
                if isinstance(value, _Int):
                    self.report.result_int = value.number
                self.report.result_from_call = isinstance(value, _Made)
                self.report.end_offset = self.pos
                return
            elif name == "PROTO":
                if argument is None:  # unreachable: _OPCODES gives PROTO a one-byte argument (the TypeError it had)
                    raise _StreamError("PROTO without its fixed-size argument")
                protocol = argument[0]
                if protocol > _HIGHEST_PROTOCOL:
                    raise _StreamError(f"unsupported pickle protocol {protocol} at byte {self.op_offset}")
                self.report.protocol = protocol
            elif name == "FRAME":
                pass  # a frame only groups opcodes for buffered reads; what is inside decodes the same
            elif name == "MARK":
                self.marks.append(len(stack))
            elif name == "POP":
                if len(stack) > self._fence():
                    stack.pop()
                elif self.marks:
                    self._pop_mark()
                else:
                    raise _StreamError(f"stack underflow at POP (byte {self.op_offset})")
            elif name == "POP_MARK":
                self._pop_mark()
            elif name == "DUP":
                stack.append(self._top())
            elif name in ("BININT", "BININT1", "BININT2"):
                if argument is None:  # unreachable: _OPCODES gives these a fixed-size argument
                    raise _StreamError(f"{name} without its fixed-size argument")
                stack.append(_Int(int.from_bytes(argument, "little", signed=name == "BININT")))
            elif name in ("LONG1", "LONG4"):
                if counted is None:  # unreachable: _OPCODES gives these a length-prefixed argument
                    raise _StreamError(f"{name} without its length-prefixed argument")
                offset, length = counted
                stack.append(
                    _Int(int.from_bytes(self.data[offset : offset + length], "little", signed=True))
                    if length <= 64
                    else _OPAQUE
                )
            elif name in ("INT", "LONG"):
                try:
                    number = None if argument is None else (_c_int(argument) if name == "INT" else _c_long(argument))
                    stack.append(_OPAQUE if number is None else _Int(number))
                except ValueError as error:  # CPython raises "could not convert string to int" here
                    raise _StreamError(f"{name} at byte {self.op_offset} is not a number") from error
            elif name in _UNICODE_OPCODES or name in _LEGACY_STRING_OPCODES:
                if counted is None:  # unreachable: _OPCODES gives these a length-prefixed argument
                    raise _StreamError(f"{name} without its length-prefixed argument")
                stack.append(self._string(*counted, "utf-8" if name in _UNICODE_OPCODES else "latin-1"))
            elif name == "UNICODE":
                try:  # _pickle.c load_unicode: PyUnicode_DecodeRawUnicodeEscape, strict
                    stack.append(_Str(None if argument is None else argument.decode("raw-unicode-escape")))
                except UnicodeDecodeError as error:
                    raise _StreamError(f"UNICODE at byte {self.op_offset} is not raw-unicode-escape") from error
            elif name == "STRING":
                stack.append(_Str(None) if argument is None else self._quoted_string(argument))
            elif name == "FLOAT":
                if argument is not None and not _c_float_ok(argument):
                    raise _StreamError(f"FLOAT at byte {self.op_offset} is not a number")
                stack.append(_OPAQUE)
            elif name in (
                "BINFLOAT",
                "NONE",
                "NEWTRUE",
                "NEWFALSE",
                "BINBYTES",
                "SHORT_BINBYTES",
                "BINBYTES8",
                "BYTEARRAY8",
                "EMPTY_DICT",
                "EMPTY_LIST",
                "EMPTY_TUPLE",
                "EMPTY_SET",
                "NEXT_BUFFER",
            ):
                stack.append(_OPAQUE)
            elif name in ("PERSID", "BINPERSID"):
                if name == "BINPERSID":
                    self._pop()
                elif not self._line_is_ascii(argument):  # _pickle.c load_persid: persistent IDs must be ASCII
                    raise _StreamError(f"PERSID at byte {self.op_offset} is not ASCII")
                stack.append(_OPAQUE)
            elif name == "READONLY_BUFFER":
                self._top()
            elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
                self._pop_mark()
                stack.append(_OPAQUE)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                for _ in range(int(name[-1])):
                    self._pop()
                stack.append(_OPAQUE)
            elif name == "APPEND":
                self._pop()
                self._method_target(self._target())
            elif name == "SETITEM":
                self._pop()
                self._pop()
                self._method_target(self._target())
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                if self._pop_mark() or name != "ADDITEMS":  # CPython's ADDITEMS with no items never looks at its target
                    self._method_target(self._target())
            elif name == "BUILD":
                self._pop()
                self._method_target(self._top())
            elif name == "MEMOIZE":
                self.memo[len(self.memo)] = self._top()
            elif name == "GLOBAL":
                module = self._utf8_line(self._readline())
                attribute = self._utf8_line(self._readline())
                stack.append(self._import(module, attribute))
            elif name == "STACK_GLOBAL":
                attribute_value, module_value = self._pop(), self._pop()
                if (
                    isinstance(module_value, _Str)
                    and isinstance(attribute_value, _Str)
                    and module_value.text is not None
                    and attribute_value.text is not None
                ):
                    stack.append(self._import(module_value.text, attribute_value.text))
                elif not self.strict and not any(isinstance(v, (_Str, _Made)) for v in (module_value, attribute_value)):
                    raise _StreamError(f"STACK_GLOBAL without strings at byte {self.op_offset}")
                else:
                    stack.append(self._unresolved("takes its module or name from a computed value"))
            elif name in ("EXT1", "EXT2", "EXT4"):
                if not self.strict:  # a stock interpreter's copyreg extension registry is empty: load fails here
                    raise _StreamError(f"{name} at byte {self.op_offset}")
                stack.append(self._unresolved("imports through the copyreg extension registry"))
            elif name == "INST":
                module = self._utf8_line(self._readline(), ascii_only=True)
                attribute = self._utf8_line(self._readline(), ascii_only=True)
                self._pop_mark()
                stack.append(self._call(self._import(module, attribute)))
            elif name == "OBJ":
                items = self._pop_mark()
                if not items:
                    raise _StreamError(f"OBJ without a class at byte {self.op_offset}")
                stack.append(self._call(items[0]))
            elif name == "REDUCE":
                self._pop()
                stack[-1] = self._call(self._top())
            elif name == "NEWOBJ":
                self._pop()
                stack.append(self._call(self._pop()))
            elif name == "NEWOBJ_EX":
                self._pop()
                self._pop()
                stack.append(self._call(self._pop()))
            else:  # pragma: no cover - every table entry is handled above
                raise _StreamError(f"unhandled opcode {name}")

    def _line_is_ascii(self, line: bytes | None) -> bool:
        if line is not None:
            return line.isascii()
        start, end = self.line_span
        return all(
            bytes(self.data[position : min(end, position + _MAX_LINE_COPY_BYTES)]).isascii()
            for position in range(start, end, _MAX_LINE_COPY_BYTES)
        )

    def _memo_index(self, argument: bytes | None) -> int:
        if argument is None:  # a memo index of over a million digits: CPython cannot store or find it
            raise _StreamError(f"{self.op_name} index too long at byte {self.op_offset}")
        if self.op_name in ("GET", "PUT"):
            try:
                return int(argument, 10)
            except ValueError as error:
                raise _StreamError(f"{self.op_name} with a bad index at byte {self.op_offset}") from error
        return int.from_bytes(argument, "little")

    def _utf8_line(self, line: bytes | None, ascii_only: bool = False) -> str:
        if line is None:
            return f"<a name of {self.line_span[1] - self.line_span[0]} bytes>"  # never importable, never allowed
        try:
            return line.decode("ascii" if ascii_only else "utf-8")
        except UnicodeDecodeError as error:
            raise _StreamError(f"{self.op_name} name at byte {self.op_offset} is not text") from error

    def _quoted_string(self, line: bytes) -> _Value:
        # pickle's load_string: strip matching quotes, then escape_decode (Lib/pickle.py).
        if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
            try:
                return _Str(codecs.escape_decode(line[1:-1])[0].decode("latin-1"))
            except ValueError:
                return _Str(None)
        raise _StreamError(f"STRING at byte {self.op_offset} is not quoted")


_STRTOL = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(0[xX](?=[0-9a-fA-F])[0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_C_LONG_MIN, _C_LONG_MAX = -(1 << 63), (1 << 63) - 1


def _c_int(line: bytes) -> int | None:
    """The value of an INT line as CPython reads it (_pickle.c load_int).

    C strtol(s, &end, 0) first (so "010" is octal 8, " 0x1f" is 31), accepted when it stops at
    the newline or a NUL and fits a C long; otherwise PyLong_FromString(s, NULL, 0), which is
    Python's int(text, 0) on the text up to the first NUL (underscores, "0x", whitespace).
    A legacy torch magic number written as "0x1950A86A20F9469CFC6C" is therefore recognised.
    """
    text = line.split(b"\0", 1)[0]
    match = _STRTOL.match(text)
    if match and match.end() == len(text) and len(text) <= 32:  # longer text overflows a C long anyway
        sign, digits = match.groups()
        base = 16 if digits[:2] in (b"0x", b"0X") else (8 if digits.startswith(b"0") else 10)
        value = int(digits, base) * (-1 if sign == b"-" else 1)
        if _C_LONG_MIN <= value <= _C_LONG_MAX:
            return value
    return _py_long(text)


def _c_long(line: bytes) -> int | None:
    """The value of a LONG line (_pickle.c load_long): a trailing "L" dropped, then PyLong_FromString(s, NULL, 0)."""
    text = line[:-1] if line.endswith(b"L") else line
    return _py_long(text.split(b"\0", 1)[0])


_STRTOD = re.compile(rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))")


def _c_float_ok(line: bytes) -> bool:
    """Whether CPython reads a FLOAT line (_pickle.c load_float: PyOS_string_to_double must stop at
    the newline or a NUL, no whitespace, and a finite literal that overflows is an error)."""
    text = line.split(b"\0", 1)[0]
    if not _STRTOD.fullmatch(text):
        return False
    return text.lower().lstrip(b"+-")[:3] in (b"inf", b"nan") or float(text) not in (float("inf"), float("-inf"))


_LONG_DECIMAL = re.compile(rb"\s*[+-]?[1-9](_?[0-9])*\s*")


def _py_long(text: bytes) -> int | None:
    """int(text, 0); None for a decimal longer than this interpreter converts (sys.get_int_max_str_digits),
    which an unpickling process with a higher limit would still read: a number, never a parse error."""
    try:
        return int(text, 0)
    except ValueError:
        if _LONG_DECIMAL.fullmatch(text):
            return None
        raise


def scan_pickle_stream(
    data, start: int = 0, end: int | None = None, *, strict: bool = True, persistent_ids: bool = True
) -> StreamReport:
    """Walks one pickle stream in `data[start:end]` (bytes or mmap) without executing it.

    `persistent_ids`: whether the loader sets a persistent_load (torch does for data.pkl and the
    legacy object pickle; plain pickle.load and numpy.load do not, so PERSID stops them).
    """
    stop = len(data) if end is None else min(end, len(data))
    return _Walker(data, start, stop, strict, persistent_ids).run()
