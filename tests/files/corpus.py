"""The scanner's test corpus, built by script at test time (no dangerous binary is ever committed).

Three groups, each with its right answer:
- "malicious": a payload that a plain loader runs (it creates `canary`); `live` says which loader,
  and a test proves it in a subprocess (attacks.run_live). Right answer: unsafe, exit 1.
- "unprovable": inert or corrupt files no loader can run (an unregistered copyreg extension code,
  random bytes behind a 7z magic, a zip without its end record). Right answer: exit 2, "cannot
  prove safe"; neither "safe" nor a claim that code would run.
- "benign": real checkpoints: torch.save of a real model's state (the MiniLM BERT) and a torch
  model (zip and legacy formats), optimizer and scheduler state, numpy arrays, the real MiniLM.
  Right answer: safe, exit 0.
Also used by benchmarks/scan_compare.py, which reports each group separately.
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
import zlib
from dataclasses import dataclass
from pathlib import Path

MALICIOUS, UNPROVABLE, BENIGN = "malicious", "unprovable", "benign"


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    group: str  # malicious | unprovable | benign
    description: str
    live: str = ""  # malicious only: the loader that runs the payload (attacks.run_live)
    printed: str | None = None  # for a payload that cannot write files: what it prints

    @property
    def malicious(self) -> bool:
        return self.group == MALICIOUS


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
    return (
        b"\x80\x02cbuiltins\neval\nX"
        + struct.pack("<I", len(_python_write(canary)))
        + _text(_python_write(canary))
        + b"\x85R."
    )


def builtins_exec(canary: Path) -> bytes:
    return pickle.dumps(_Reduce(exec, _python_write(canary)), protocol=3)


def subprocess_popen(canary: Path) -> bytes:
    import subprocess

    return pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(canary)]), protocol=2)


def getattr_chain(canary: Path) -> bytes:
    # getattr(__import__('os'), 'system')('touch canary'), protocol 0.
    return b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'" + _text(_touch(canary)) + b"'\ntR."


def runpy_run_code(canary: Path) -> bytes:
    import runpy

    return pickle.dumps(_Reduce(runpy._run_code, _python_write(canary), {}), protocol=4)


def webbrowser_open(canary: Path) -> bytes:
    """webbrowser.open(canary): it starts $BROWSER (run_live sets it to `touch`) on the "URL"."""
    url = str(canary).encode()
    return b"\x80\x04\x8c\nwebbrowser\x8c\x04open\x93\x8c" + bytes([len(url)]) + url + b"\x85R."


def stack_global_memo(canary: Path) -> bytes:
    """STACK_GLOBAL whose module and name come back from the memo (MEMOIZE then BINGET)."""
    command = _text(_touch(canary))
    return (
        b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94"
        + b"0" * 2  # push, memoize, then POP both
        + b"h\x00h\x01\x93\x8c"
        + bytes([len(command)])
        + command
        + b"\x85R."
    )


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
    """BUILD with slot state on the collections.Counter class itself: sets Counter.most_common = 1
    in the loading process (monkey-patching an allowlisted class)."""
    return b"\x80\x02ccollections\nCounter\nN}X\x0b\x00\x00\x00most_commonK\x01s\x86b."


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
    """A torch checkpoint whose data.pkl has a wrong CRC and a local header name that differs from
    the central directory's: zipfile refuses it, torch's reader loads it."""
    import torch

    data = bytearray(_torch_zip_bytes({"w": torch.ones(2)}, replace_pickle=payload))
    header = next(
        info for info in zipfile.ZipFile(io.BytesIO(bytes(data))).infolist() if info.filename.endswith("/data.pkl")
    ).header_offset
    data[header + 14 : header + 18] = b"\xde\xad\xbe\xef"  # local CRC
    data[header + 30 : header + 35] = b"xxxxx"  # local name
    central = data.find(b"PK\x01\x02")
    data[central + 16 : central + 20] = b"\xde\xad\xbe\xef"  # central CRC of the first entry, data.pkl
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
    return torch.nn.Sequential(
        torch.nn.Embedding(128, 32),
        torch.nn.TransformerEncoder(layer, num_layers=2),
        torch.nn.LayerNorm(32),
        torch.nn.Linear(32, 128),
    )


def build_corpus(directory: Path, canary: Path, minilm_dir: Path | None = None) -> list[CorpusFile]:
    """Writes the corpus into `directory` and returns every file with its group."""
    import numpy
    import torch

    from tests.files.attacks import pre_1_0_torch_tar

    directory.mkdir(parents=True, exist_ok=True)
    files: list[CorpusFile] = []

    def add(name: str, data: bytes, group: str, description: str, live: str = "", printed: str | None = None) -> None:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(CorpusFile(path, group, description, live, printed))

    for protocol in range(6):
        add(
            f"malicious/os_system_p{protocol}.pkl",
            os_system(canary, protocol),
            MALICIOUS,
            f"os.system, protocol {protocol}",
            "pickle",
        )
    add("malicious/posix_system.pkl", posix_system_global(canary), MALICIOUS, "posix.system GLOBAL, no PROTO", "pickle")
    add("malicious/eval.pkl", builtins_eval(canary), MALICIOUS, "builtins.eval", "pickle")
    add("malicious/exec.pkl", builtins_exec(canary), MALICIOUS, "builtins.exec", "pickle")
    add("malicious/popen.pkl", subprocess_popen(canary), MALICIOUS, "subprocess.Popen", "pickle")
    add(
        "malicious/getattr_chain.pkl", getattr_chain(canary), MALICIOUS, "getattr(__import__('os'), 'system')", "pickle"
    )
    add("malicious/runpy.pkl", runpy_run_code(canary), MALICIOUS, "runpy._run_code", "pickle")
    add("malicious/webbrowser.pkl", webbrowser_open(canary), MALICIOUS, "webbrowser.open (starts $BROWSER)", "pickle")
    add("malicious/stack_global_memo.pkl", stack_global_memo(canary), MALICIOUS, "STACK_GLOBAL from memo", "pickle")
    add("malicious/inst.pkl", inst_opcode(canary), MALICIOUS, "INST opcode", "pickle")
    add("malicious/obj.pkl", obj_opcode(canary), MALICIOUS, "OBJ opcode", "pickle")
    add(
        "malicious/build_class.pkl",
        build_on_allowed_class(canary),
        MALICIOUS,
        "BUILD on an allowlisted class (monkey-patches collections.Counter)",
        "class-mutation",
    )
    add("malicious/truncated.pkl", truncated_payload(canary), MALICIOUS, "truncated stream that still runs", "pickle")
    add(
        "malicious/second_stream.pkl",
        pickle.dumps({"ok": 1}, 4) + os_system(canary, 4),
        MALICIOUS,
        "payload in the second of two concatenated pickles",
        "pickle",
    )

    state = {"weight": torch.ones(4, 4), "bias": torch.zeros(4)}
    payload = os_system(canary, 2)
    add(
        "malicious/weird_folder.pt",
        _torch_zip_bytes(state, folder="totally_normal", replace_pickle=payload),
        MALICIOUS,
        "torch zip, payload data.pkl under an unusual folder",
        "torch",
    )
    add(
        "malicious/payload_in_storage_member.pt",
        _zip_of({"archive/data.pkl": pickle.dumps(1, 2), "archive/data/0": payload}),
        MALICIOUS,
        "payload pickle in a member that is not named .pkl (runs once extracted and unpickled)",
        "member:archive/data/0",
    )
    add(
        "malicious/crc_and_local_name.pt",
        zip_with_bad_crc_and_renamed_local_header(payload),
        MALICIOUS,
        "bad CRC, local header name differs from the central directory",
        "torch",
    )
    inner = _torch_zip_bytes(state, replace_pickle=payload)
    add(
        "malicious/nested.zip",
        _zip_of({"outer/checkpoint.zip": _zip_of({"inner/model.pt": inner})}),
        MALICIOUS,
        "zip in zip in zip",
        "nested-torch",
    )
    for position in (1, 2):
        add(
            f"malicious/legacy_payload_pickle{position + 1}.pt",
            legacy_with_payload(state, payload, position),
            MALICIOUS,
            f"legacy torch file, payload in pickle {position + 1}",
            "torch",
        )
    add(
        "malicious/object_array.npy",
        npy_object_array(_Reduce(os.system, _touch(canary))),
        MALICIOUS,
        "npy object array",
        "numpy",
    )
    add(
        "malicious/object_array.npz",
        _zip_of({"a.npy": npy_object_array(_Reduce(os.system, _touch(canary)))}),
        MALICIOUS,
        "npz with an object array",
        "numpy",
    )
    add("malicious/payload.pkl.gz", gzip.compress(payload), MALICIOUS, "gzip-wrapped payload", "gzip")
    add(
        "malicious/second_member.pkl.gz",
        gzip.compress(pickle.dumps([1], 2)) + gzip.compress(payload),
        MALICIOUS,
        "payload in the second member of a multi-member gzip",
        "gzip",
    )
    add(
        "malicious/old_torch.tar",
        pre_1_0_torch_tar(pickled=payload),
        MALICIOUS,
        "torch's pre-1.0 tar format, payload in its pickle member",
        "torch",
    )
    add("malicious/payload.pkl.xz", lzma.compress(payload), MALICIOUS, "xz-wrapped payload", "xz")
    add("malicious/payload.pkl.bz2", bz2.compress(payload), MALICIOUS, "bz2-wrapped payload", "bz2")
    add("malicious/payload.pkl.z", zlib.compress(payload), MALICIOUS, "zlib-wrapped payload (joblib's .z)", "zlib")
    add(
        "malicious/payload.pkl.lzma",
        lzma.compress(payload, format=lzma.FORMAT_ALONE),
        MALICIOUS,
        "lzma-alone-wrapped payload (joblib's .lzma)",
        "lzma",
    )

    add(
        "unprovable/ext2.pkl",
        extension_registry(canary),
        UNPROVABLE,
        "copyreg extension code (EXT2): unregistered on a stock interpreter, so nothing runs",
    )
    add(
        "unprovable/archive.7z",
        b"7z\xbc\xaf\x27\x1c\x00\x04" + os.urandom(64),
        UNPROVABLE,
        "7z magic and random bytes (cannot be opened)",
    )
    add(
        "unprovable/payload.pkl.lz4",
        b"\x04\x22\x4d\x18" + os.urandom(64),
        UNPROVABLE,
        "lz4 frame magic and random bytes (no lz4 decoder in the standard library)",
    )
    add(
        "unprovable/corrupt_member.pt",
        _zip_of({"archive/data.pkl": payload})[:-40] + b"\x00" * 40,
        UNPROVABLE,
        "zip whose end record is overwritten (no reader opens it)",
    )

    # ---- benign ----
    model = _tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    scheduler.step()
    random_bytes = {f"layer{i}": torch.randint(0, 256, (2048,), dtype=torch.uint8) for i in range(64)}
    mixed = {
        "bf16": torch.randn(64, dtype=torch.bfloat16),
        "fp16": torch.randn(64, dtype=torch.float16),
        "int": torch.arange(64),
        "param": torch.nn.Parameter(torch.ones(3)),
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "set": {1, 2},
        "bytes": b"xyz",
        "step": 7,
        "nested": [(1.5, None, True)],
    }
    rng_state = {
        "python": __import__("random").getstate(),
        "numpy": numpy.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    checkpoints = {
        "model_state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "random_uint8_tensors": random_bytes,
        "mixed": mixed,
        "rng_state": rng_state,
    }
    if minilm_dir is not None:
        from safetensors.torch import load_file

        checkpoints["minilm_state_dict"] = load_file(Path(minilm_dir) / "model.safetensors")  # the real BERT
    for name, obj in checkpoints.items():
        add(f"benign/{name}.bin", _torch_zip_bytes(obj), BENIGN, f"torch.save {name} (zip)")
        add(f"benign/{name}_legacy.pt", _legacy_torch_bytes(obj), BENIGN, f"torch.save {name} (legacy)")
    for protocol in range(6):
        plain = {"a": [1, 2.5, "x", b"y", None], "s": {1}, "f": frozenset({2}), "array": numpy.arange(5.0)}
        add(
            f"benign/plain_p{protocol}.pkl",
            pickle.dumps(plain, protocol=protocol),
            BENIGN,
            f"plain data pickle, protocol {protocol}",
        )
    buffer = io.BytesIO()
    numpy.save(buffer, numpy.random.rand(16, 16).astype(numpy.float32))
    add("benign/array.npy", buffer.getvalue(), BENIGN, "npy float array")
    add("benign/object_array.npy", npy_object_array({"k": [1, 2]}), BENIGN, "npy object array of plain values")
    buffer = io.BytesIO()
    numpy.savez_compressed(buffer, a=numpy.arange(100), b=numpy.ones((3, 3)))
    add("benign/arrays.npz", buffer.getvalue(), BENIGN, "npz (deflate-compressed)")
    add("benign/old_torch.tar", pre_1_0_torch_tar(), BENIGN, "torch's pre-1.0 tar format (a tensor in a dict)")
    add("benign/state.pkl.gz", gzip.compress(pickle.dumps({"x": [1, 2, 3]}, 4)), BENIGN, "gzip-wrapped plain pickle")
    add("benign/config.json", b'{"model_type": "llama", "hidden_size": 32}\n', BENIGN, "json")
    if minilm_dir is not None:
        files.append(CorpusFile(Path(minilm_dir) / "model.safetensors", BENIGN, "real MiniLM safetensors"))
    return files
