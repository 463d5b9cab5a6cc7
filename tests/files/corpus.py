"""The scanner's test corpus, built by script at test time (no dangerous binary is ever committed).

Every malicious file's payload creates `canary` when unpickled; nothing in the test suite loads
them, except one test that proves in a subprocess that the payloads are live. Benign files are
real checkpoints: torch.save of a real model's state (the MiniLM BERT) and a torch model (zip and legacy formats), optimizer and scheduler
state, numpy arrays, the real MiniLM. Also used by benchmarks/scan_compare.py.
"""

from __future__ import annotations

import bz2
import copyreg
import gzip
import io
import lzma
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    malicious: bool
    description: str
    live: str = ""  # how the payload is proven to run: "pickle" (each stream) or "zip" (the archive's data.pkl)


def _text(value: str) -> bytes:
    return value.encode()


# ---- payload pickles ----------------------------------------------------------------------------
def _touch(canary: Path) -> str:
    return f"touch {canary}"


def _python_write(canary: Path) -> str:
    return f"open({str(canary)!r}, 'w').write('pwned')"


class _Reduce:
    """Pickles as `func(*args)`: the classic __reduce__ gadget."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def os_system(canary: Path, protocol: int) -> bytes:
    return pickle.dumps(_Reduce(os.system, _touch(canary)), protocol=protocol)


def posix_system_global(canary: Path) -> bytes:
    return b"cposix\nsystem\n(V" + _text(_touch(canary)) + b"\ntR."


def builtins_eval(canary: Path) -> bytes:
    return b"\x80\x02cbuiltins\neval\nX" + struct.pack("<I", len(_python_write(canary))) + _text(_python_write(canary)) + b"\x85R."


def builtins_exec(canary: Path) -> bytes:
    return pickle.dumps(_Reduce(exec, _python_write(canary)), protocol=3)


def subprocess_popen(canary: Path) -> bytes:
    import subprocess

    return pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(canary)]), protocol=2)


def getattr_chain(canary: Path) -> bytes:
    # getattr(__import__('os'), 'system')('touch canary'), protocol 0.
    return (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'"
            + _text(_touch(canary)) + b"'\ntR.")


def runpy_run_code(canary: Path) -> bytes:
    import runpy

    return pickle.dumps(_Reduce(runpy._run_code, _python_write(canary), {}), protocol=4)


def webbrowser_open(canary: Path) -> bytes:
    return b"\x80\x04\x8c\nwebbrowser\x8c\x04open\x93\x8c\x10file:///dev/null\x85R."


def stack_global_memo(canary: Path) -> bytes:
    """STACK_GLOBAL whose module and name come back from the memo (MEMOIZE then BINGET)."""
    command = _text(_touch(canary))
    return (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94" + b"0" * 2  # push, memoize, then POP both
            + b"h\x00h\x01\x93\x8c" + bytes([len(command)]) + command + b"\x85R.")


def inst_opcode(canary: Path) -> bytes:
    return b"(S'" + _text(_touch(canary)) + b"'\nios\nsystem\n."


def obj_opcode(canary: Path) -> bytes:
    return b"(cos\nsystem\nS'" + _text(_touch(canary)) + b"'\no."


def extension_registry(canary: Path) -> bytes:
    """os.system reached through copyreg's extension registry (EXT2), not a GLOBAL."""
    copyreg.add_extension("posix", "system", 0x1F1F)
    try:
        return pickle.dumps(_Reduce(os.system, _touch(canary)), protocol=2)
    finally:
        copyreg.remove_extension("posix", "system", 0x1F1F)


def build_on_allowed_class(canary: Path) -> bytes:
    """BUILD with slot state on the torch.Size class itself: monkey-patches an allowlisted class."""
    return b"\x80\x02ctorch\nSize\nN}X\x07\x00\x00\x00__len__K\x01s\x86b."


def truncated_payload(canary: Path) -> bytes:
    """No STOP: pickle.load runs os.system, then fails with EOFError."""
    return b"cos\nsystem\n(S'" + _text(_touch(canary)) + b"'\ntR"


# ---- containers ---------------------------------------------------------------------------------
def _torch_zip_bytes(obj, folder: str | None = None, replace_pickle: bytes | None = None) -> bytes:
    """torch.save(obj) as a zip, optionally with its folder renamed and data.pkl replaced."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    if folder is None and replace_pickle is None:
        return buffer.getvalue()
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            name = info.filename.split("/", 1)[1]
            body = replace_pickle if (name == "data.pkl" and replace_pickle is not None) else source.read(info)
            target.writestr(f"{folder or info.filename.split('/', 1)[0]}/{name}", body)
    return out.getvalue()


def _legacy_torch_bytes(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def legacy_with_payload(obj, payload: bytes, position: int) -> bytes:
    """A legacy torch file whose `position`-th pickle (0 magic, 1 protocol, 2 sys info) is replaced."""
    from lmforge.files.pickle_scan import scan_pickle_stream

    data = _legacy_torch_bytes(obj)
    bounds, start = [], 0
    for _ in range(3):
        end = scan_pickle_stream(data, start).end_offset
        bounds.append((start, end))
        start = end
    begin, finish = bounds[position]
    return data[:begin] + payload + data[finish:]


def _zip_of(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return out.getvalue()


def _tar_of(members: dict[str, bytes]) -> bytes:
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return out.getvalue()


def zip_with_bad_crc_and_renamed_local_header(payload: bytes) -> bytes:
    """A zip torch's reader still opens: wrong CRC and a local header name that differs."""
    data = bytearray(_zip_of({"model/data.pkl": payload}))
    local_crc_at, name_at = 14, 30
    data[local_crc_at : local_crc_at + 4] = b"\xde\xad\xbe\xef"
    data[name_at : name_at + 5] = b"xxxxx"
    central = data.find(b"PK\x01\x02")
    data[central + 16 : central + 20] = b"\xde\xad\xbe\xef"
    return bytes(data)


def npy_object_array(payload_object) -> bytes:
    import numpy

    array = numpy.empty(2, dtype=object)
    array[0], array[1] = "fine", payload_object
    buffer = io.BytesIO()
    numpy.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


# ---- benign -------------------------------------------------------------------------------------
def _tiny_model():
    """A small decoder-shaped torch model (embedding, attention, MLP, norm, tied head); no transformers import."""
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    return torch.nn.Sequential(torch.nn.Embedding(128, 32), torch.nn.TransformerEncoder(layer, num_layers=2),
                               torch.nn.LayerNorm(32), torch.nn.Linear(32, 128))


def build_corpus(directory: Path, canary: Path, minilm_dir: Path | None = None) -> list[CorpusFile]:
    """Writes the corpus into `directory` and returns every file with its expected verdict."""
    import numpy
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    files: list[CorpusFile] = []

    def add(name: str, data: bytes, malicious: bool, description: str, live: str = "") -> None:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(CorpusFile(path, malicious, description, live))

    for protocol in range(6):
        add(f"malicious/os_system_p{protocol}.pkl", os_system(canary, protocol), True, f"os.system, protocol {protocol}", live="pickle")
    add("malicious/posix_system.pkl", posix_system_global(canary), True, "posix.system GLOBAL, no PROTO", live="pickle")
    add("malicious/eval.pkl", builtins_eval(canary), True, "builtins.eval", live="pickle")
    add("malicious/exec.pkl", builtins_exec(canary), True, "builtins.exec", live="pickle")
    add("malicious/popen.pkl", subprocess_popen(canary), True, "subprocess.Popen")
    add("malicious/getattr_chain.pkl", getattr_chain(canary), True, "getattr(__import__('os'), 'system')", live="pickle")
    add("malicious/runpy.pkl", runpy_run_code(canary), True, "runpy._run_code", live="pickle")
    add("malicious/webbrowser.pkl", webbrowser_open(canary), True, "webbrowser.open")
    add("malicious/stack_global_memo.pkl", stack_global_memo(canary), True, "STACK_GLOBAL from memo", live="pickle")
    add("malicious/inst.pkl", inst_opcode(canary), True, "INST opcode", live="pickle")
    add("malicious/obj.pkl", obj_opcode(canary), True, "OBJ opcode", live="pickle")
    add("malicious/ext2.pkl", extension_registry(canary), True, "copyreg extension code (EXT2)")
    add("malicious/build_class.pkl", build_on_allowed_class(canary), True, "BUILD on an allowlisted class")
    add("malicious/truncated.pkl", truncated_payload(canary), True, "truncated stream that still runs", live="pickle")
    add("malicious/second_stream.pkl", pickle.dumps({"ok": 1}, 4) + os_system(canary, 4), True,
        "payload in the second of two concatenated pickles", live="pickle")

    state = {"weight": torch.ones(4, 4), "bias": torch.zeros(4)}
    payload = os_system(canary, 2)
    add("malicious/weird_folder.pt", _torch_zip_bytes(state, folder="totally_normal", replace_pickle=payload),
        True, "torch zip, payload data.pkl under an unusual folder", live="zip")
    add("malicious/payload_in_storage_member.pt", _zip_of({"archive/data.pkl": pickle.dumps(1, 2), "archive/data/0": payload}),
        True, "payload in a member that is not named .pkl")
    add("malicious/crc_and_local_name.pt", zip_with_bad_crc_and_renamed_local_header(payload), True,
        "bad CRC, local header name differs from the central directory")
    inner = _torch_zip_bytes(state, replace_pickle=payload)
    add("malicious/nested.zip", _zip_of({"outer/checkpoint.zip": _zip_of({"inner/model.pt": inner})}), True, "zip in zip in zip")
    for position in (1, 2):
        add(f"malicious/legacy_payload_pickle{position + 1}.pt", legacy_with_payload(state, payload, position), True,
            f"legacy torch file, payload in pickle {position + 1}", live="pickle")
    add("malicious/object_array.npy", npy_object_array(_Reduce(os.system, _touch(canary))), True, "npy object array")
    add("malicious/object_array.npz", _zip_of({"a.npy": npy_object_array(_Reduce(os.system, _touch(canary)))}), True,
        "npz with an object array")
    add("malicious/payload.pkl.gz", gzip.compress(payload), True, "gzip-wrapped payload")
    add("malicious/second_member.pkl.gz", gzip.compress(pickle.dumps([1], 2)) + gzip.compress(payload), True,
        "payload in the second member of a multi-member gzip")
    add("malicious/old_torch.tar", _tar_of({"sys_info": pickle.dumps({}, 2), "pickle": payload}), True,
        "tar (torch's oldest format) with a payload member")
    add("malicious/payload.pkl.xz", lzma.compress(payload), True, "xz-wrapped payload")
    add("malicious/payload.pkl.bz2", bz2.compress(payload), True, "bz2-wrapped payload")
    add("malicious/archive.7z", b"7z\xbc\xaf\x27\x1c\x00\x04" + os.urandom(64), True, "7z container (cannot be scanned)")
    add("malicious/corrupt_member.pt", _zip_of({"archive/data.pkl": payload})[:-40] + b"\x00" * 40, True,
        "zip with a corrupt central directory")

    # ---- benign ----
    model = _tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    scheduler.step()
    random_bytes = {f"layer{i}": torch.randint(0, 256, (2048,), dtype=torch.uint8) for i in range(64)}
    mixed = {"bf16": torch.randn(64, dtype=torch.bfloat16), "fp16": torch.randn(64, dtype=torch.float16),
             "int": torch.arange(64), "param": torch.nn.Parameter(torch.ones(3)), "size": torch.Size([2, 3]),
             "device": torch.device("cpu"), "set": {1, 2}, "bytes": b"xyz", "step": 7, "nested": [(1.5, None, True)]}
    rng_state = {"python": __import__("random").getstate(), "numpy": numpy.random.get_state(),
                 "cpu": torch.random.get_rng_state()}
    checkpoints = {
        "model_state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "random_uint8_tensors": random_bytes, "mixed": mixed, "rng_state": rng_state,
    }
    if minilm_dir is not None:
        from safetensors.torch import load_file

        checkpoints["minilm_state_dict"] = load_file(Path(minilm_dir) / "model.safetensors")  # the real BERT
    for name, obj in checkpoints.items():
        add(f"benign/{name}.bin", _torch_zip_bytes(obj), False, f"torch.save {name} (zip)")
        add(f"benign/{name}_legacy.pt", _legacy_torch_bytes(obj), False, f"torch.save {name} (legacy)")
    for protocol in range(6):
        plain = {"a": [1, 2.5, "x", b"y", None], "s": {1}, "f": frozenset({2}), "array": numpy.arange(5.0)}
        add(f"benign/plain_p{protocol}.pkl", pickle.dumps(plain, protocol=protocol), False,
            f"plain data pickle, protocol {protocol}")
    buffer = io.BytesIO()
    numpy.save(buffer, numpy.random.rand(16, 16).astype(numpy.float32))
    add("benign/array.npy", buffer.getvalue(), False, "npy float array")
    add("benign/object_array.npy", npy_object_array({"k": [1, 2]}), False, "npy object array of plain values")
    buffer = io.BytesIO()
    numpy.savez_compressed(buffer, a=numpy.arange(100), b=numpy.ones((3, 3)))
    add("benign/arrays.npz", buffer.getvalue(), False, "npz (deflate-compressed)")
    add("benign/old_torch.tar", _tar_of({"sys_info": pickle.dumps({"little_endian": True}, 2),
                                         "pickle": pickle.dumps({"step": 1}, 2)}), False, "tar of plain pickles")
    add("benign/state.pkl.gz", gzip.compress(pickle.dumps({"x": [1, 2, 3]}, 4)), False, "gzip-wrapped plain pickle")
    add("benign/config.json", b'{"model_type": "llama", "hidden_size": 32}\n', False, "json")
    if minilm_dir is not None:
        files.append(CorpusFile(Path(minilm_dir) / "model.safetensors", False, "real MiniLM safetensors"))
    return files
