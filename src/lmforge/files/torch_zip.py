"""List the tensors of a torch checkpoint without unpickling it.

torch.save writes a pickle whose tensors are calls like
`torch._utils._rebuild_tensor_v2(persistent_id(('storage', torch.FloatStorage, key, device, numel)),
offset, size, stride, ...)`. We decode the opcodes with pickletools.genops (a parser: it executes
nothing) and simulate the pickle stack symbolically: globals stay names, calls stay records. Then we
walk the result for tensor-rebuild calls to recover names, dtypes and shapes. Nothing is imported or
called, so this is safe on a malicious file (the scanner decides whether it may be *loaded*).
"""

from __future__ import annotations

import io
import math
import os
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lmforge.errors import FormatError

# torch storage class → (safetensors-style dtype, bytes per element)
STORAGE_DTYPES: dict[str, tuple[str, int]] = {
    "FloatStorage": ("F32", 4),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "DoubleStorage": ("F64", 8),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
    "ComplexFloatStorage": ("C64", 8),
    "ComplexDoubleStorage": ("C128", 16),
    "Float8_e4m3fnStorage": ("F8_E4M3", 1),
    "Float8_e5m2Storage": ("F8_E5M2", 1),
}
_REBUILD_TENSOR = {"_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_tensor_v3"}
_REBUILD_WRAPPER = {"_rebuild_parameter", "_rebuild_parameter_with_state"}
MAX_PICKLE_BYTES = 512 * 1024 * 1024  # a data.pkl holds structure only; bigger is hostile
_MAX_DEPTH = 64


@dataclass(frozen=True)
class TorchTensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    storage_key: str

    @property
    def num_params(self) -> int:
        return math.prod(self.shape)

    @property
    def size_bytes(self) -> int:
        bytes_per_element = next((size for dt, size in STORAGE_DTYPES.values() if dt == self.dtype), 0)
        return self.num_params * bytes_per_element


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass
class _Call:
    func: Any
    args: Any
    items: dict[Any, Any] = field(default_factory=dict)  # SETITEM(S) on an OrderedDict(...) call
    state: Any = None  # BUILD's argument: a pickled module keeps its parameters here


@dataclass(frozen=True)
class _Persistent:
    pid: Any


class _Mark:
    pass


def _simulate(stream: IO[bytes]) -> Any:
    """Run one pickle stream on a symbolic stack; returns the symbolic top-level object."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            name = opcode.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return stack.pop() if stack else None
            if name == "MARK":
                stack.append(_Mark())
            elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_SET"):
                stack.append({"EMPTY_DICT": {}, "EMPTY_LIST": [], "EMPTY_TUPLE": (), "EMPTY_SET": []}[name])
            elif name in ("GLOBAL", "INST"):
                module, _, attribute = str(arg).partition(" ")
                stack.append(_Global(module, attribute))
            elif name == "STACK_GLOBAL":
                attribute, module = stack.pop(), stack.pop()
                stack.append(_Global(str(module), str(attribute)))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                assert arg is not None  # genops decodes an int index for every PUT opcode
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                assert arg is not None  # genops decodes an int index for every GET opcode
                stack.append(memo.get(int(arg)))
            elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
                items = _pop_to_mark(stack)
                if name == "DICT":
                    stack.append({_key(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)})
                else:
                    stack.append(tuple(items) if name != "LIST" else items)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                count = int(name[-1])
                items = stack[-count:]
                del stack[-count:]
                stack.append(tuple(items))
            elif name in ("BINPERSID", "PERSID"):
                stack.append(_Persistent(stack.pop() if name == "BINPERSID" else arg))
            elif name in ("REDUCE", "NEWOBJ"):
                args, func = stack.pop(), stack.pop()
                stack.append(_Call(func, args))
            elif name == "NEWOBJ_EX":
                stack.pop()
                args, func = stack.pop(), stack.pop()
                stack.append(_Call(func, args))
            elif name == "OBJ":
                items = _pop_to_mark(stack)
                stack.append(_Call(items[0] if items else None, tuple(items[1:])))
            elif name == "BUILD":
                state = stack.pop()
                if isinstance(stack[-1], _Call):
                    stack[-1].state = state
            elif name in ("SETITEM", "SETITEMS"):
                items = stack[-2:] if name == "SETITEM" else _pop_to_mark(stack)
                if name == "SETITEM":
                    del stack[-2:]
                target = stack[-1]
                mapping = target.items if isinstance(target, _Call) else target
                if isinstance(mapping, dict):
                    for i in range(0, len(items) - 1, 2):
                        mapping[_key(items[i])] = items[i + 1]
            elif name in ("APPEND", "APPENDS", "ADDITEMS"):
                items = [stack.pop()] if name == "APPEND" else _pop_to_mark(stack)
                if isinstance(stack[-1], list):
                    stack[-1].extend(items)
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                _pop_to_mark(stack)
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
                stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
            else:  # every other opcode pushes its decoded argument (ints, floats, strings, bytes)
                stack.append(arg)
    except (
        ValueError,
        IndexError,
        KeyError,
        TypeError,
        EOFError,
        UnicodeDecodeError,
        AttributeError,
        RecursionError,
    ) as error:
        raise FormatError(f"malformed pickle stream: {error}") from None
    raise FormatError("pickle stream ends without STOP (truncated)")


def _pop_to_mark(stack: list[Any]) -> list[Any]:
    for index in range(len(stack) - 1, -1, -1):
        if isinstance(stack[index], _Mark):
            items = stack[index + 1 :]
            del stack[index:]
            return items
    raise FormatError("malformed pickle stream: no MARK on the stack")


def _key(value: Any) -> Any:
    return value if isinstance(value, (str, int, bytes, float, bool, type(None))) else repr(value)[:80]


def _tensor_from_call(name: str, call: _Call) -> TorchTensorInfo | None:
    func = call.func
    if not isinstance(func, _Global) or not isinstance(call.args, tuple):
        return None
    if func.name in _REBUILD_WRAPPER and call.args and isinstance(call.args[0], _Call):
        return _tensor_from_call(name, call.args[0])
    if func.name not in _REBUILD_TENSOR or len(call.args) < 3:
        return None
    storage, _, size = call.args[:3]
    pid = storage.pid if isinstance(storage, _Persistent) else None
    if not isinstance(pid, tuple) or len(pid) < 3 or not isinstance(size, tuple):
        return None
    storage_type = pid[1]
    type_name = storage_type.name if isinstance(storage_type, _Global) else str(storage_type)
    dtype = STORAGE_DTYPES.get(type_name, (type_name.removesuffix("Storage") or "?", 0))[0]
    if not all(isinstance(d, int) and d >= 0 for d in size):
        return None
    return TorchTensorInfo(name, dtype, tuple(size), str(pid[2]))


def _collect(value: Any, prefix: str, out: list[TorchTensorInfo], depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, _Call):
        tensor = _tensor_from_call(prefix, value)
        if tensor is not None:
            out.append(tensor)
            return
        _collect(value.items, prefix, out, depth + 1)
        _collect(value.state, prefix, out, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect(item, f"{prefix}.{key}" if prefix else str(key), out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _collect(item, f"{prefix}.{index}" if prefix else str(index), out, depth + 1)


def tensors_from_pickle(stream: IO[bytes]) -> list[TorchTensorInfo]:
    """Tensors in one pickle stream of a torch checkpoint, named by their path in the saved object."""
    tensors: list[TorchTensorInfo] = []
    _collect(_simulate(stream), "", tensors)
    return tensors


def list_torch_tensors(path: str | os.PathLike[str]) -> list[TorchTensorInfo]:
    """Tensors of a torch.save file (zip with <folder>/data.pkl, or the legacy pickle format)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((i for i in archive.infolist() if i.filename.rsplit("/", 1)[-1] == "data.pkl"), None)
                if member is None:
                    raise FormatError(f"{path.name}: zip archive has no data.pkl; not a torch.save checkpoint")
                if member.file_size > MAX_PICKLE_BYTES:
                    raise FormatError(f"{path.name}: data.pkl is {member.file_size} bytes, over a sane limit")
                return tensors_from_pickle(io.BytesIO(archive.read(member)))
        with path.open("rb") as handle:
            for _ in range(3):  # legacy layout: magic number, protocol version, sys info, then the object
                _simulate(handle)
            return tensors_from_pickle(handle)
    except FormatError as error:
        message = str(error)
        raise FormatError(message if message.startswith(path.name) else f"{path.name}: {message}") from None
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as error:
        raise FormatError(f"{path.name}: cannot read the torch archive: {error}") from None
