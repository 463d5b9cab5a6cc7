"""Atomic writes: a reader sees the old file or the complete new one, never half of either.

Every file and folder lmforge writes goes through these helpers (temporary name in the same
folder, fsync, then os.replace), so an interrupted run never leaves a truncated artefact. The
temporary file and folder are made private by tempfile (0600/0700); before they take the target's
name they get the mode a plain open()/mkdir() would have given (the existing target's, else
0666/0777 less the umask), so a run folder on a shared machine is as readable as anything else its
owner writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process umask (os.umask can only be read by setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_mode(target: Path, directory: bool = False) -> int:
    """The permission bits a plain write of `target` would leave: an existing target keeps its own,
    a new one gets 0666 (0777 for a folder) less the umask, as open() and mkdir() do."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return (0o777 if directory else 0o666) & ~_umask()


def writable_folder(path: str | os.PathLike[str], *, setting: str) -> Path:
    """Create `path` (with its parents) and prove a file can be made in it, before any long work starts.

    A read-only, full or misplaced folder (a file where a folder should be) becomes one line naming the
    folder and the setting that chose it, instead of an OSError traceback minutes into a run.
    """
    from lmforge.errors import UserInputError

    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserInputError(
            f"{setting}: cannot write to the folder {folder} ({reason}); set {setting} to a folder you can write to"
        ) from None
    return folder


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), normal_mode(target))
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> Path:
    return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that wants a file name (torch.save, savefig,
    safetensors, gguf); it is renamed over `path` only if the block finishes without an exception."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder that replaces `path` only once the block completes.

    An existing `path` is replaced (moved aside, then removed) so a finished checkpoint or
    export is either the old one or the complete new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        os.chmod(temporary, normal_mode(target, directory=True))
        yield temporary
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(temporary, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def atomic_save_figure(figure: Any, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically and close it (figures hold memory until closed)."""
    import matplotlib.pyplot as plt

    target = Path(path)
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    plt.close(figure)
    return target
