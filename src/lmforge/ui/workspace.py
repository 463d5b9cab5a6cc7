"""The folders the UI may read and write, and the models, runs and data files it finds in them.

A browser is another program even on localhost, and with `--host 0.0.0.0` it is another machine, so no
path typed into a form is trusted: `Workspace.check` resolves it (symlinks and `..` followed) and refuses
it unless it lies inside an allowed root: the runs folder and the folders given with `--allow` (by
default the folder the UI was started in). Pickers only ever offer what the walks below find inside
those roots, and the walks are bounded (depth, entry count) so a huge home folder cannot stall a page.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import NotFoundError, UserInputError

MAX_DEPTH = 4  # folders below a root that the pickers look into
MAX_ENTRIES = 20_000  # directory entries one walk reads at most
# Folders that hold environments or caches, never something a user picks.
_SKIPPED = {".venv", "venv", "node_modules", "__pycache__", "site-packages"}
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt")
MODEL_FILE_SUFFIXES = (
    ".safetensors",
    ".gguf",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".onnx",
    ".npy",
    ".npz",
    ".zip",
    ".tar",
    ".gz",
)


def is_run_folder(path: Path) -> bool:
    """A training run: `lmforge train` writes config.yaml first; a run the UI is about to start has ui/train.yaml."""
    return (path / "config.yaml").is_file() or (path / "ui" / "train.yaml").is_file()


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


@dataclass(frozen=True)
class Workspace:
    """Where the UI may look: `runs` (new runs, evaluations and exports go here) and the other allowed roots."""

    runs: Path
    roots: tuple[Path, ...]

    @classmethod
    def create(cls, runs: str | os.PathLike[str], allow: Sequence[str | os.PathLike[str]] | None = None) -> Workspace:
        """The runs folder (created) plus the allowed folders (default: the current folder), each resolved."""
        runs_path = Path(runs).expanduser().resolve()
        runs_path.mkdir(parents=True, exist_ok=True)
        roots = [runs_path]
        for folder in allow if allow is not None else [Path.cwd()]:
            path = Path(folder).expanduser().resolve()
            if not path.is_dir():
                raise NotFoundError(f"--allow {folder}: no such folder")
            if path not in roots:
                roots.append(path)
        return cls(runs_path, tuple(roots))

    def contains(self, path: str | os.PathLike[str]) -> bool:
        resolved = Path(path).expanduser().resolve()
        return any(resolved == root or resolved.is_relative_to(root) for root in self.roots)

    def check(self, path: str | os.PathLike[str], *, must_exist: bool = True) -> Path:
        """`path` resolved, if it lies inside an allowed root; a one-line error naming the roots otherwise."""
        text = str(path).strip()
        if not text:
            raise UserInputError("no path given")
        resolved = Path(text).expanduser().resolve()
        if not self.contains(resolved):
            allowed = ", ".join(str(root) for root in self.roots)
            raise UserInputError(
                f"{text} is outside the folders this UI may use ({allowed}); start it with --allow FOLDER to add one"
            )
        if must_exist and not resolved.exists():
            raise NotFoundError(f"{text} does not exist")
        return resolved

    def model(self, reference: str | os.PathLike[str]) -> str:
        """A model reference from the page: a path inside the allowed folders, or a hub id (org/name[@revision])
        that names no local path, passed on as typed. lmforge.hub.locate_model then resolves it as every command
        does (a local path first; a hub id fetched into the Hugging Face cache and its pickles scanned)."""
        from lmforge.hub.reference import is_hub_id

        text = str(reference).strip()
        if text and not Path(text).expanduser().exists() and is_hub_id(text):
            return text
        return str(self.check(text))

    def run_path(self, name: str) -> Path:
        """The folder for a new run, evaluation or export named `name`, inside the runs folder."""
        clean = name.strip().strip("/")
        if not clean or clean.startswith(".") or ".." in Path(clean).parts:
            raise UserInputError(f"run name {name!r}: use letters, digits, '-', '_' (and '/' for sub-folders)")
        return self.check(self.runs / clean, must_exist=False)

    def _walk(self, roots: tuple[Path, ...] | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
        """(folder, sub-folder names, file names) below each root, breadth-limited as the module says."""
        seen, visited = 0, set()
        for root in roots or self.roots:
            for folder, folders, files in os.walk(root):
                here = Path(folder)
                if here in visited:  # the runs folder usually lies inside the current folder too
                    folders[:] = []
                    continue
                visited.add(here)
                depth = len(here.relative_to(root).parts)
                seen += len(folders) + len(files)
                if seen > MAX_ENTRIES:
                    return
                # A run's or a model's insides (checkpoints, data, final/) are reached through the folder itself.
                if depth >= MAX_DEPTH or is_run_folder(here) or _is_model_folder(here):
                    folders[:] = []
                # Sorted for a stable picker; hidden, environment and run-internal folders are never offered.
                folders[:] = sorted(f for f in folders if not f.startswith(".") and f not in _SKIPPED)
                yield here, folders, sorted(files)

    def run_folders(self) -> list[Path]:
        """Every run folder under the runs folder (quickstart's nested ones too), most recently changed first."""
        runs = [folder for folder, _, _ in self._walk((self.runs,)) if is_run_folder(folder)]
        return sorted(runs, key=_changed, reverse=True)

    def model_folders(self) -> list[Path]:
        """Folders a model loads from: model or adapter folders, and run folders (their final/ or newest checkpoint)."""
        found = []
        for folder, _, _ in self._walk():
            has_weights = (folder / "final").is_dir() or (folder / "checkpoints").is_dir()
            if _is_model_folder(folder) or (is_run_folder(folder) and has_weights):
                found.append(folder)
        return found

    def tokenizer_folders(self) -> list[Path]:
        """Folders a tokenizer loads from (a model folder with one, or a run whose final/ has one)."""
        return [
            folder
            for folder in self.model_folders()
            if (folder / "tokenizer_config.json").is_file() or (folder / "final" / "tokenizer_config.json").is_file()
        ]

    def data_files(self) -> list[Path]:
        """Files `lmforge data` reads (by suffix), outside run internals and environments."""
        return [
            folder / name
            for folder, _, files in self._walk()
            if not is_run_folder(folder) and not _is_model_folder(folder)
            for name in files
            if name.endswith(DATA_SUFFIXES) and not name.startswith(".") and name not in _NOT_DATA
        ]

    def model_files(self) -> list[Path]:
        """What the Files tab offers: model folders and weight files (by suffix; the scanner never trusts one)."""
        files = [
            folder / name
            for folder, _, names in self._walk()
            for name in names
            if name.endswith(MODEL_FILE_SUFFIXES) and not name.startswith(".")
        ]
        folders = [folder / "final" if is_run_folder(folder) else folder for folder in self.model_folders()]
        return sorted({path for path in folders + files if path.exists()})


# JSON files that belong to a model or a run, not datasets.
_NOT_DATA = {
    "config.json",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "plan.json",
    "result.json",
    "summary.json",
    "job.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "trainer_state.json",
}


def _changed(folder: Path) -> float:
    """When a run last wrote anything the UI shows (metrics.jsonl, else config.yaml, else the folder)."""
    for name in ("metrics.jsonl", "config.yaml", "ui/job.json"):
        if (folder / name).is_file():
            return (folder / name).stat().st_mtime
    return folder.stat().st_mtime
