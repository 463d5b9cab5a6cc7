"""Download the wheels a GPU machine without network needs to run lmforge (`make gpu-wheels`).

The GPU machine has Python 3.12 with torch, numpy, pandas, pyarrow and the CUDA libraries, but not
everything lmforge uses (trl, datasets, bitsandbytes, deepspeed, fastapi...), or older versions than
lmforge is tested with. This walks lmforge's requirements (with the `gpu` extra, and what
`transformers serve` needs) through the metadata of THIS environment, and downloads each package at the
version installed here, for CPython 3.12 on manylinux x86_64, into FOLDER. Packages the GPU image already
carries and that are too large to carry (torch, the CUDA libraries, numpy, pandas, pyarrow...) are left out;
sdist-only packages (deepspeed, rouge-score) are built into pure-Python wheels here. bitsandbytes keeps only
its CPU library and the CUDA 13.0 one the image's torch uses (43 MB -> ~5 MB), so everything fits the 64 MiB
that travels to the GPU machine. benchmarks/gpu_check.py --wheels FOLDER installs them there.

    .venv/bin/python benchmarks/gpu_wheels.py .whl
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# openai: `transformers serve`; nvidia-ml-py: NVML readings; hjson: deepspeed's requirement (deepspeed is not
# installed here, so its metadata cannot be walked; the first H200 run stopped at "No module named 'hjson'").
ROOTS = ["lmforge[gpu]", "openai", "nvidia-ml-py", "hjson"]
# On the GPU image already, and large: carrying them would not fit (KINDS.md lists the image's packages).
ON_IMAGE = {
    "torch",
    "triton",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "matplotlib",
    "contourpy",
    "fonttools",
    "kiwisolver",
    "pillow",
    "sympy",
    "networkx",
    "mpmath",
    "lxml",
    "hf-xet",
    "aiohttp",
    "frozenlist",
    "multidict",
    "yarl",
    "propcache",
    "aiohappyeyeballs",
    "aiosignal",
    "attrs",
    "pyparsing",
    "cycler",
    "python-dateutil",
    "six",
    "tzdata",
    "setuptools",
    "pip",
    "wheel",
    "markupsafe",
    "jinja2",
    "pyyaml",
    "psutil",
    "requests",
    "urllib3",
    "certifi",
    "charset-normalizer",
    "idna",
    "ninja",
    "py-cpuinfo",
    "msgpack",
    "einops",
    "packaging",
    "filelock",
    "nvidia-ml-py3",
    "zipp",
    "colorama",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "nltk",
    "absl-py",
    "joblib",
    "sacrebleu",
    "portalocker",
    "tabulate",
    "evaluate",
    "rouge-score",
}
SDIST_ONLY = {"deepspeed"}
PLATFORMS = [
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_31_x86_64",
    "manylinux_2_34_x86_64",
    "manylinux1_x86_64",
]
TARGET = {
    **default_environment(),
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "platform_system": "Linux",
}
BNB_KEEP = re.compile(r"libbitsandbytes_(cpu|cuda130)\.so$")
LIMIT_BYTES = 56 * 2**20  # the working tree and the wheels travel together, 64 MiB in all


def closure() -> dict[str, str | None]:
    """{package: version installed here, or None} for everything ROOTS need on the GPU machine."""
    found: dict[str, str | None] = {}
    todo = [Requirement(root) for root in ROOTS]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found or name in ON_IMAGE:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None  # not installed here (deepspeed, nvidia-ml-py): the newest release
            continue
        found[name] = distribution.version if name != "lmforge" else None
        for text in distribution.requires or []:
            child = Requirement(text)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({**TARGET, "extra": extra}) for extra in extras):
                todo.append(child)
    found.pop("lmforge", None)
    return found


def download(folder: Path, packages: dict[str, str | None]) -> None:
    specs = [
        name if version is None else f"{name}=={version}"
        for name, version in packages.items()
        if name not in SDIST_ONLY
    ]
    platform_args = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platform_args,
            "-d",
            str(folder),
            *specs,
        ],
        check=True,
    )
    for name in SDIST_ONLY & packages.keys():
        version = packages[name]
        spec = name if version is None else f"{name}=={version}"
        # DS_BUILD_OPS=0: DeepSpeed compiles its CUDA ops on first use (JIT) on the GPU machine, not here.
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(folder), spec],
            check=True,
            env={**__import__("os").environ, "DS_BUILD_OPS": "0"},
        )


def trim_bitsandbytes(folder: Path) -> None:
    """Rewrite the bitsandbytes wheel without the GPU libraries the image's torch (CUDA 13.0) never loads."""
    for wheel in folder.glob("bitsandbytes-*.whl"):
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".whl", delete=False) as handle:
            trimmed = Path(handle.name)
        with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as target:
            names = [n for n in source.namelist() if not n.endswith(".so") or BNB_KEEP.search(n)]
            record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
            records = []
            for name in names:
                if name == record_name:
                    continue
                data = source.read(name)
                target.writestr(name, data)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                records.append(f"{name},sha256={digest},{len(data)}")
            target.writestr(record_name, "\n".join([*records, f"{record_name},,"]) + "\n")
        trimmed.replace(wheel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    for old in args.folder.glob("*.whl"):
        old.unlink()
    packages = closure()
    download(args.folder, packages)
    trim_bitsandbytes(args.folder)
    wheels = sorted(args.folder.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {args.folder}")
    if total > LIMIT_BYTES:
        raise SystemExit(f"{total / 2**20:.1f} MiB is more than the {LIMIT_BYTES / 2**20:.0f} MiB that can travel")


if __name__ == "__main__":
    main()
