"""The one gate every lmforge code path uses to load a pickle-based checkpoint.

Scan first (lmforge.files.scan), refuse anything not proven safe, then let torch load it with
weights_only=True as a second, independent line of defence. torch older than 2.6 is refused:
its weights_only mode could be bypassed to run code (CVE-2025-32434). `trust_pickle=True` (the
CLI's `--trust-pickle`) is the explicit, user-given override: no scan, a full unpickle.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import DependencyError, FormatError, NotFoundError, UnsafeFileError
from lmforge.files.scan import scan_file, scan_paths

MIN_SAFE_TORCH = (2, 6)  # first release with the CVE-2025-32434 weights_only fix
_NESTED_JAGGED_MODULES = ("torch.nested.", "torch._dynamo.")
_FINDINGS_IN_MESSAGE = 3


def torch_version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as '2.13.0+cpu'."""
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def _numpy_safe_globals() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """The numpy reconstructors the scanner allowlists, under both numpy 1.x and 2.x module names.

    torch's own weights_only allowlist has no numpy, so checkpoints holding arrays (Trainer's
    rng_state.pth) would be refused without these.
    """
    import numpy

    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]  # same names, older home

    pairs: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (numpy.ndarray, "numpy.ndarray"),
        (numpy.dtype, "numpy.dtype"),
    ]
    for package in ("numpy.core", "numpy._core"):
        pairs += [
            (multiarray._reconstruct, f"{package}.multiarray._reconstruct"),
            (multiarray.scalar, f"{package}.multiarray.scalar"),
            (numeric._frombuffer, f"{package}.numeric._frombuffer"),  # type: ignore[attr-defined]  # private
        ]
    # np.dtype(...) builds an instance of a per-dtype class (numpy.dtypes.Float64DType); BUILD needs it allowed.
    pairs += [
        (type(numpy.dtype(code)), f"numpy.dtypes.{type(numpy.dtype(code)).__name__}")
        for code in "?bBhHiIlLqQefdgFDGSUVO"
    ]
    return pairs


def require_safe(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> None:
    """Scans a file or a model folder and raises UnsafeFileError if any file is not proven safe.

    For code paths that hand a folder to another loader (transformers' from_pretrained, peft)
    instead of calling safe_torch_load themselves.
    """
    if trust_pickle:
        return
    target = Path(path)
    if not target.exists():
        raise NotFoundError(f"{target} does not exist")
    report = scan_paths([target])
    bad = report.unsafe + report.unproven + report.errors
    if bad:
        names = ", ".join(f"{Path(item.path).name} ({_reasons(item)})" for item in bad[:_FINDINGS_IN_MESSAGE])
        more = len(bad) - min(len(bad), _FINDINGS_IN_MESSAGE)
        raise UnsafeFileError(
            f"{target} holds files not proven safe to load: {names}{f' and {more} more' if more else ''}"
            " (see `lmforge scan`); pass --trust-pickle only if you trust its source"
        )


# The pickle weight files transformers and peft would unpickle when a folder has no safetensors.
WEIGHT_PICKLES = ("pytorch_model*.bin", "adapter_model.bin")


def check_model_folder(folder: str | os.PathLike[str], *, trust_pickle: bool = False) -> bool:
    """Gate for handing a model or adapter folder to from_pretrained: True if it has safetensors.

    With safetensors present, loaders are told `use_safetensors=True` and never touch a pickle;
    otherwise every pickle weight file must pass the scanner first (UnsafeFileError names the file).
    """
    target = Path(folder)
    if any(target.glob("*.safetensors")):
        return True
    if not trust_pickle:
        for file in sorted(f for pattern in WEIGHT_PICKLES for f in target.glob(pattern) if f.is_file()):
            require_safe(file)
    return False


def _reasons(report) -> str:
    if report.error:
        return report.error
    reasons = list(dict.fromkeys(finding.global_name or finding.message for finding in report.findings))
    more = len(reasons) - min(len(reasons), _FINDINGS_IN_MESSAGE)
    return ", ".join(reasons[:_FINDINGS_IN_MESSAGE]) + (f" and {more} more" if more else "")


def safe_torch_load(path: str | os.PathLike[str], *, trust_pickle: bool = False, map_location: Any = "cpu") -> Any:
    """torch.load, but only after the scanner proved the file safe; weights_only=True on torch >= 2.6.

    Raises UnsafeFileError naming the offending globals, DependencyError on an old torch.
    """
    target = Path(path)
    if not target.is_file():
        raise NotFoundError(f"{target} is not a file")
    import torch

    if trust_pickle:
        warnings.warn(f"loading {target} with a full unpickle (--trust-pickle): it can run code", stacklevel=2)
        return torch.load(target, map_location=map_location, weights_only=False)

    report = scan_file(target)
    if report.verdict == "error":
        raise FormatError(f"{target}: {report.error}")
    if report.verdict != "safe":
        raise UnsafeFileError(
            f"{target} is not proven safe to load: {_reasons(report)}"
            " (see `lmforge scan`); pass --trust-pickle only if you trust its source"
        )
    if torch_version_tuple(torch.__version__) < MIN_SAFE_TORCH:
        raise DependencyError(
            f"torch {torch.__version__} has a weights_only bypass (CVE-2025-32434); "
            "install torch>=2.6 or pass --trust-pickle only if you trust this file"
        )
    if any(name.startswith(_NESTED_JAGGED_MODULES) for name in report.globals):
        # torch's weights_only loader accepts jagged nested tensors once these modules registered
        # their classes as safe globals (torch/nested/__init__.py, torch/_dynamo/__init__.py).
        import importlib

        for module in ("torch.nested", "torch._dynamo"):
            importlib.import_module(module)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(target, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise FormatError(
            f"torch's weights_only loader refused {target} although the scan found no unsafe global: "
            f"{_weights_only_reason(str(error))}; re-save it with torch.save's default protocol, "
            "or pass --trust-pickle only if you trust its source"
        ) from error


def _weights_only_reason(message: str) -> str:
    """The one informative line of torch's long weights_only error ("Unsupported operand 149")."""
    marker = "WeightsUnpickler error:"
    if marker in message:
        tail = message.split(marker, 1)[1].strip()
        return tail.split("\n\n", 1)[0].strip() or "unknown reason"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown reason"
