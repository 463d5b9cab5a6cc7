"""The one model reference every command takes: what the user typed → a local folder or file, and what it is.

    a model folder        config.json beside the weights (and tokenizer)
    an adapter folder     adapter_config.json (peft), over the base model it names
    a training run        RUN/final, else RUN's newest complete checkpoints/checkpoint-N
    a checkpoint folder   checkpoint-N: a model or an adapter, beside the Trainer's state
    a weights or GGUF file  one file: inspect, scan and convert read it; loaders need a folder
    a hub id              org/name[@revision]: fetched by lmforge.hub.download into the Hugging Face cache

A local path wins over a hub id spelled the same. `locate_model(need="model")` is the gate every loader
(train, generate, chat, eval, serve) passes: the reference must be a model transformers can load, its
pickle weights must pass the scanner before anything unpickles them (lmforge.files.safe_load), and the
Python code a repo ships never runs unless the user said trust_remote_code.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmforge.errors import ConfigError, NotFoundError, UserInputError
from lmforge.hub.download import COMMIT_HASH, fetch_snapshot, tell

HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^\s@]+))?")
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")  # a Trainer checkpoint, in a run's checkpoints/
Kind = Literal["model", "adapter", "run", "checkpoint", "weights-file", "gguf-file", "folder", "hub"]
Need = Literal["model", "any", "config"]
_KINDS_WANTED = (
    "give a model folder, a training run or checkpoint folder, an adapter folder, a weights or GGUF file, "
    "or a hub id (org/name[@revision])"
)


@dataclass(frozen=True)
class ModelRef:
    """A model reference, resolved: `path` is on this machine (a hub id's snapshot in the cache)."""

    source: str  # what the user typed
    kind: Kind
    path: Path  # the folder holding config.json or adapter_config.json, or the one file
    repo_id: str | None = None  # hub references: org/name
    revision: str | None = None  # the branch, tag or commit asked for (None: main)
    commit: str | None = None  # the commit the files come from

    @property
    def is_adapter(self) -> bool:
        return self.path.is_dir() and is_adapter_folder(self.path)

    @property
    def name(self) -> str:
        """How lmforge names it (served model id, reports): the hub id, a run's name, run/checkpoint-N, else the
        folder or file name."""
        if self.repo_id:
            return self.repo_id + (f"@{self.revision}" if self.revision else "")
        cached = snapshot_origin(self.path)
        if cached is not None:
            return cached[0]
        if self.path.name == "final":
            return self.path.parent.name
        if self.path.parent.name == "checkpoints":
            return f"{self.path.parent.parent.name}/{self.path.name}"
        return self.path.name


def snapshot_origin(path: Path | str) -> tuple[str, str] | None:
    """(org/name, commit) when `path` is a snapshot folder of the HF cache (models--org--name/snapshots/<commit>)."""
    parts = Path(path).parts
    if (
        len(parts) >= 3
        and parts[-2] == "snapshots"
        and parts[-3].startswith("models--")
        and COMMIT_HASH.fullmatch(parts[-1])
    ):
        return parts[-3].removeprefix("models--").replace("--", "/", 1), parts[-1]
    return None


def is_hub_id(text: str) -> bool:
    """org/name or org/name@revision (a path that exists locally is used as a path first)."""
    return HUB_ID.fullmatch(text) is not None


def parse_hub_id(text: str, revision: str | None = None) -> tuple[str, str | None]:
    """(org/name, revision) from `text`; `revision` (--revision) must agree with an @revision in it."""
    match = HUB_ID.fullmatch(text)
    if match is None:
        raise UserInputError(f"{text} is not a hub id: write org/name or org/name@revision")
    named = match["revision"]
    if revision and named and revision != named:
        raise UserInputError(f"{text} names revision {named} but --revision says {revision}: give one")
    return match["repo"], named or revision


def is_adapter_folder(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


def holds_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def locate_model(
    reference: str | os.PathLike[str],
    *,
    need: Need = "model",
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
) -> ModelRef:
    """Resolve what the user typed (see the module docstring); a hub id is downloaded unless cached.

    need="model": something a loader can take, gated (scanned pickles, no unasked remote code);
    need="any": whatever it is, for readers (inspect, scan, convert); need="config": a hub id fetches its
    config.json only (the planner). Raises NotFoundError, UserInputError, UnsafeFileError or HubError.
    """
    text = str(reference).strip()
    if not text:
        raise UserInputError(f"no model given: {_KINDS_WANTED}")
    path = Path(text).expanduser()
    if path.exists():
        if revision:
            raise UserInputError(f"{text} is a local path; a revision applies to hub ids only")
        ref = _local(text, path)
    elif is_hub_id(text):
        repo_id, asked = parse_hub_id(text, revision)
        snapshot = fetch_snapshot(
            repo_id,
            asked,
            what="config" if need == "config" else "weights",
            token=token,
            cache_dir=cache_dir,
            trust_remote_code=trust_remote_code,
        )
        ref = ModelRef(text, "hub", snapshot.folder, repo_id, asked, snapshot.commit)
    else:
        raise NotFoundError(f"model {text} does not exist: {_KINDS_WANTED}")
    if need == "model":
        _check_loadable(ref, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code)
    return ref


def local_paths(references: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """What `lmforge scan` reads: each local path as given (a missing one too: the scanner reports it), and for a
    hub id that names no local path its snapshot folder, fetched as loading would (need="any"), so the scanner
    judges exactly the files a load would read. Nothing is loaded."""
    return [
        locate_model(str(reference), need="any").path
        if not Path(reference).exists() and is_hub_id(str(reference))
        else Path(reference)
        for reference in references
    ]


def _local(text: str, path: Path) -> ModelRef:
    if path.is_file():
        with path.open("rb") as handle:
            return ModelRef(text, "gguf-file" if handle.read(4) == b"GGUF" else "weights-file", path)
    if holds_model(path):
        kind: Kind = (
            "checkpoint"
            if CHECKPOINT_NAME.fullmatch(path.name)
            else ("adapter" if is_adapter_folder(path) else "model")
        )
        return ModelRef(text, kind, path)
    if holds_model(path / "final"):
        return ModelRef(text, "run", path / "final")
    checkpoints = _checkpoints(path / "checkpoints")
    if checkpoints:
        return ModelRef(text, "checkpoint", checkpoints[-1])
    return ModelRef(text, "folder", path)


def _checkpoints(root: Path) -> list[Path]:
    """A run's complete checkpoints (lmforge renames them into place only once written), oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_NAME.match(p.name)) and holds_model(p)]
    return [path for _, path in sorted(found)]


def _check_loadable(ref: ModelRef, *, trust_pickle: bool, trust_remote_code: bool) -> None:
    """What every loader needs before it touches a byte: a model or adapter folder, pickles proven safe,
    and no repo code that would run unasked."""
    from lmforge.files.safe_load import check_model_folder

    if ref.kind == "gguf-file":
        raise UserInputError(
            f"{ref.source} is a GGUF file: this command loads transformers models (a folder with "
            "config.json, a run, an adapter or a hub id); run GGUF with llama.cpp, or read it with "
            "`lmforge inspect`"
        )
    if ref.kind == "weights-file":
        raise UserInputError(
            f"{ref.source} is a single weights file: give the folder that holds it with its config.json"
        )
    if not holds_model(ref.path):
        if ref.repo_id:
            raise NotFoundError(f"{ref.name} has no config.json or adapter_config.json: not a model transformers loads")
        raise NotFoundError(
            f"{ref.path} holds no config.json or adapter_config.json, no final/ and no "
            "checkpoints/checkpoint-N: not a model"
        )
    if not trust_pickle:
        check_model_folder(ref.path)
    _check_remote_code(ref, trust_remote_code)


def remote_code_files(folder: Path) -> list[str]:
    """The Python files a repo's auto_map (config.json, tokenizer_config.json) points transformers at."""
    modules = set()
    for name in ("config.json", "tokenizer_config.json"):
        try:
            auto_map = json.loads((folder / name).read_text(encoding="utf-8")).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for value in auto_map.values() if isinstance(auto_map, dict) else []:
            for target in value if isinstance(value, list) else [value]:
                if isinstance(target, str) and "." in target:  # "[org/repo--]modeling_x.ClassName"
                    modules.add(target.split("--")[-1].rsplit(".", 1)[0].replace(".", "/") + ".py")
    return sorted(modules)


def _check_remote_code(ref: ModelRef, trust_remote_code: bool) -> None:
    """transformers runs a repo's own modeling code only with trust_remote_code=True, which lmforge passes only
    when the user said so. Without it a model transformers knows loads with its built-in classes (said, so the
    user knows the repo's code was not used); one it does not know is refused here, naming the files."""
    files = remote_code_files(ref.path)
    if not files or trust_remote_code:
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    try:
        model_type = json.loads((ref.path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type in CONFIG_MAPPING_NAMES:
        tell(
            f"{ref.name} ships Python code ({', '.join(files)}) that lmforge does not run: it loads with "
            f"transformers' own {model_type} classes (--trust-remote-code would run the repo's code instead)"
        )
        return
    raise UserInputError(
        f"{ref.name} needs its own Python code to load ({', '.join(files)}), which would run on this "
        "machine with your permissions: lmforge runs it only with --trust-remote-code, once you have "
        "read it"
    )


def adapter_base(adapter_dir: Path) -> str:
    """The base model an adapter was trained on, from its adapter_config.json."""
    return str(_adapter_config(adapter_dir)[0])


def _adapter_config(adapter_dir: Path) -> tuple[str, str | None]:
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{adapter_dir}/adapter_config.json is unreadable: {error}") from None
    base = config.get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{adapter_dir}/adapter_config.json names no base_model_name_or_path; pass the base as MODEL")
    return str(base), config.get("revision")


def locate_base(
    adapter: ModelRef,
    *,
    need: Need = "model",
    token: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    trust_pickle: bool = False,
    trust_remote_code: bool = False,
) -> ModelRef:
    """The base model an adapter names: a local folder (as written, or relative to the adapter or its run, since
    training records the path it was given), a hub id (at the revision peft recorded), or a snapshot in the hub
    cache that has since gone (a run trained from a hub id records its snapshot folder): fetched again by id."""
    base, revision = _adapter_config(adapter.path)
    for candidate in (Path(base).expanduser(), adapter.path / base, adapter.path.parent / base):
        if candidate.exists():
            base, revision = str(candidate), None
            break
    else:
        base, revision = snapshot_origin(base) or (base, revision)
        if not is_hub_id(base):
            raise NotFoundError(
                f"adapter {adapter.path}: its base model {base} does not exist; pass the base as MODEL with --adapter"
            )
    return locate_model(
        base,
        need=need,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        trust_pickle=trust_pickle,
        trust_remote_code=trust_remote_code,
    )
