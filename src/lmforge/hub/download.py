"""Models from the Hugging Face Hub: the files loading needs, fetched through huggingface_hub or found in its cache.

No HTTP is written here: huggingface_hub's `model_info` lists a revision's files and `snapshot_download`
fetches the chosen ones into the standard cache (models--org--name/snapshots/<commit>), skipping files already
there and resuming a transfer the network cut with an HTTP Range request. Its token (token=, else HF_TOKEN,
else the stored `hf auth login`), cache (cache_dir=, else HF_HUB_CACHE / HF_HOME) and endpoint (HF_ENDPOINT)
apply. The environment is read at each call: huggingface_hub reads it once at import, so a later change (in
a notebook, in a test) would otherwise be ignored.

What is fetched is what loading needs: the config, tokenizer and generation files at the repo's root (and the
settings of sentence-transformers modules, 1_Pooling/config.json ...), and one set of weights: its *.safetensors when it has any (the pickle duplicates pytorch_model.bin, *.pth, *.pt,
original/ and consolidated.* stay on the hub); otherwise the pickle weights transformers and peft read
(pytorch_model*.bin, adapter_model.bin), after saying so: every loader scans them before they load
(lmforge.files.safe_load). Python files only with trust_remote_code; GGUF files only when named (include).

Offline (HF_HUB_OFFLINE=1), or when the hub cannot be reached, the same choice is made from the revision's
cached snapshot (refs/<revision> → snapshots/<commit>) without a network call.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import HubError, NotFoundError, UserInputError

DEFAULT_REVISION = "main"
DEFAULT_ENDPOINT = "https://huggingface.co"
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
# Root files loaders read beside the weights: configs and shard indexes (.json), tokenizers (.json, .txt
# vocabularies and merges, sentencepiece .model, .tiktoken) and chat templates (.jinja).
_SUPPORT_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub.constants._is_true
_LISTED = 8  # file names shown in a message
# A sentence-transformers module's settings (1_Pooling/config.json ...), which modules.json points at: an encoder
# repo embeds with the pooling they declare.
_SENTENCE_TRANSFORMERS_MODULE = re.compile(r"\d+_[A-Za-z]+/[^/]+\.json")
What = Literal["weights", "config"]


def hub_cache_dir() -> Path:
    """The hub cache folder, read from the environment now: HF_HUB_CACHE, else the legacy
    HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub (huggingface_hub.constants' order)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    home = os.environ.get("HF_HOME") or str(Path(xdg_cache) / "huggingface")
    return Path(home).expanduser() / "hub"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set true, as huggingface_hub reads them."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def cached_snapshot(
    repo_id: str, revision: str = DEFAULT_REVISION, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[str, Path] | None:
    """(commit, snapshot folder) of `revision` in the cache, or None; no network and no huggingface_hub import
    (the planner resolves hub ids in well under 0.5 s). A branch or tag is looked up in refs/, as the hub
    client records it; a commit names its snapshot directly."""
    cache = Path(cache_dir).expanduser() if cache_dir else hub_cache_dir()
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    commit = revision
    if not COMMIT_HASH.fullmatch(revision):
        try:
            commit = (storage / "refs" / revision).read_text(encoding="utf-8").strip()
        except OSError:
            return None
    folder = storage / "snapshots" / commit
    return (commit, folder) if commit and folder.is_dir() else None


# ------------------------------------------------------------------------------------ what to fetch


@dataclass(frozen=True)
class Selection:
    """Which of a repo's files to fetch."""

    files: list[str]
    weights: list[str]
    pickled: bool  # the weights are pickles: the repo has no safetensors
    ggufs: list[str]


def select_files(
    names: Sequence[str],
    *,
    what: What = "weights",
    include: Sequence[str] | None = None,
    trust_remote_code: bool = False,
) -> Selection:
    """The files of a repo (`names`, paths relative to its root) that loading needs; see the module docstring.

    `include` globs replace the choice (`lmforge download --include`); `what="config"` is config.json alone.
    """
    from lmforge.files.safe_load import WEIGHT_PICKLES

    if include:
        chosen = [name for name in names if any(fnmatch.fnmatchcase(name, pattern) for pattern in include)]
        return Selection(sorted(chosen), [], pickled=False, ggufs=[])
    root = [name for name in names if "/" not in name]
    if what == "config":
        return Selection([name for name in root if name == "config.json"], [], pickled=False, ggufs=[])
    safetensors = [name for name in root if name.endswith(".safetensors") and not name.startswith("consolidated")]
    pickles = [name for name in root if any(fnmatch.fnmatchcase(name, pattern) for pattern in WEIGHT_PICKLES)]
    weights = safetensors or pickles
    support = [
        name
        for name in root
        if name.endswith(_SUPPORT_SUFFIXES)
        or name.startswith("tokenizer")
        or (trust_remote_code and name.endswith(".py"))
    ] + [name for name in names if _SENTENCE_TRANSFORMERS_MODULE.fullmatch(name)]
    return Selection(
        sorted(set(support + weights)),
        sorted(weights),
        pickled=not safetensors and bool(pickles),
        ggufs=sorted(name for name in names if name.endswith(".gguf")),
    )


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:_LISTED]) or "nothing"
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _check_selection(
    chosen: Selection,
    names: Sequence[str],
    label: str,
    what: What,
    include: Sequence[str] | None,
    cached_in: Path | None,
) -> None:
    """The one place a repo's missing files become an error: `cached_in` is the snapshot folder when the files
    come from the cache (then the fix is a download), None when they are the hub's listing."""
    where = f"its cached snapshot ({cached_in}) holds" if cached_in else "it holds"
    fetch = f"run `lmforge download {label}` with network access"
    if include:
        if not chosen.files:
            raise NotFoundError(f"no file of {label} matches --include {' '.join(include)} ({where} {_listing(names)})")
        return
    if what == "config":
        if not chosen.files:
            raise NotFoundError(
                f"{label} has no config.json ({where} {_listing(names)})"
                + (f"; {fetch}" if cached_in else ": not a transformers model")
            )
        return
    if chosen.weights:
        return
    if chosen.ggufs:
        raise UserInputError(
            f"{label} holds GGUF weights only ({_listing(chosen.ggufs)}): fetch one with "
            f"`lmforge download {label} --include '{chosen.ggufs[0]}'` and run it with llama.cpp"
        )
    if cached_in:
        raise NotFoundError(f"{label}: {where} no weights (only {_listing(names)}); {fetch}")
    raise NotFoundError(
        f"{label} has no weights lmforge can load ({where} {_listing(names)}): "
        "looked for *.safetensors, pytorch_model*.bin and adapter_model.bin"
    )


# ----------------------------------------------------------------------------------------- fetching


@dataclass
class Snapshot:
    """A revision of a hub repo, as far as this machine holds it."""

    repo_id: str
    revision: str
    commit: str
    folder: Path
    files: list[str]  # what loading uses (or what include named), all present in folder
    skipped: list[str]  # the repo's other files, left on the hub (unknown, so empty, when read from the cache)
    pickled: bool
    cached_only: bool = False  # found in the cache with no network call (offline, or the hub unreachable)


def fetch_snapshot(
    repo_id: str,
    revision: str | None = None,
    *,
    what: What = "weights",
    include: Sequence[str] | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
) -> Snapshot:
    """The files of `repo_id` at `revision` (branch, tag or commit; default main) that loading needs,
    downloaded unless they are in the cache. Raises NotFoundError (no such repo, revision or weights; not
    cached while offline) or HubError (gated or private, or the hub unreachable with nothing cached)."""
    revision = revision or DEFAULT_REVISION
    label = repo_id if revision == DEFAULT_REVISION else f"{repo_id}@{revision}"
    cache = Path(cache_dir).expanduser() if cache_dir else hub_cache_dir()

    def choose(names: Sequence[str]) -> Selection:
        return select_files(names, what=what, include=include, trust_remote_code=trust_remote_code)

    if offline_mode():
        return _from_cache(repo_id, revision, label, cache, choose, what, include, reason=None)
    import httpx2  # huggingface_hub's HTTP client: its transport errors mean "no network"
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    login = "log in with a token that can read it (`hf auth login`, HF_TOKEN or --token)"
    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision, files_metadata=True)
        names = [sibling.rfilename for sibling in info.siblings or []]
        chosen = choose(names)
        _check_selection(chosen, names, label, what, include, cached_in=None)
        cached = cached_snapshot(repo_id, info.sha or revision, cache)
        if chosen.pickled and not (cached and all((cached[1] / name).is_file() for name in chosen.weights)):
            from rich.filesize import decimal

            sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
            tell(
                f"{label} has no safetensors weights: fetching the pickles {_listing(chosen.weights)} "
                f"({decimal(sum(sizes.get(name, 0) for name in chosen.weights))}); "
                "they are scanned before anything loads them"
            )
        with rich_download_bars() as bars:
            folder = snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache,
                token=token,
                endpoint=endpoint,
                allow_patterns=[glob.escape(name) for name in chosen.files],
                tqdm_class=bars,
            )
    except GatedRepoError:
        raise HubError(
            f"{repo_id} is gated on the hub: accept its conditions at {endpoint}/{repo_id}, then {login}"
        ) from None
    except RevisionNotFoundError:
        raise NotFoundError(
            f"{repo_id} has no revision {revision!r} on the hub ({endpoint}): give a branch, tag or commit that exists"
        ) from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if isinstance(error, RepositoryNotFoundError) or status == 404:  # the hub says 401 for unknown repos too
            raise NotFoundError(
                f"{repo_id} is not a local path, and the hub ({endpoint}) has no model of that name; "
                f"if it is private, {login}"
            ) from None
        if status in (401, 403):
            raise HubError(f"the hub refused {repo_id} ({status}): {login}") from None
        return _from_cache(
            repo_id, revision, label, cache, choose, what, include, reason=f"the hub at {endpoint} answered {status}"
        )
    except (httpx2.TransportError, OfflineModeIsEnabled, LocalEntryNotFoundError) as error:
        return _from_cache(
            repo_id,
            revision,
            label,
            cache,
            choose,
            what,
            include,
            reason=f"the hub at {endpoint} cannot be reached ({_first_line(error)})",
        )
    assert info.sha is not None, "the hub names the commit of every revision"
    return Snapshot(
        repo_id, revision, info.sha, Path(folder), chosen.files, sorted(set(names) - set(chosen.files)), chosen.pickled
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _from_cache(
    repo_id: str,
    revision: str,
    label: str,
    cache: Path,
    choose: Any,
    what: What,
    include: Sequence[str] | None,
    reason: str | None,
) -> Snapshot:
    """The snapshot of `revision` in the cache, chosen from as online; `reason` why the hub was not asked
    (None: HF_HUB_OFFLINE is set)."""
    found = cached_snapshot(repo_id, revision, cache)
    if found is None:
        if reason is None:
            raise NotFoundError(
                f"{label} is not a local path and not in the hub cache ({cache}), and HF_HUB_OFFLINE=1 "
                f"forbids downloading it: run `lmforge download {label}` with network access first"
            )
        raise HubError(
            f"{reason}, and {label} is not in the hub cache ({cache}): "
            "connect to the network, or give a local model folder"
        )
    commit, folder = found
    names = [path.relative_to(folder).as_posix() for path in sorted(folder.rglob("*")) if path.is_file()]
    chosen = choose(names)
    _check_selection(chosen, names, label, what, include, cached_in=folder)
    _check_shards(folder, chosen.files, label)
    if reason is not None:
        tell(f"{reason}: using {label} from the cache (commit {commit[:12]})")
    return Snapshot(repo_id, revision, commit, folder, chosen.files, [], chosen.pickled, cached_only=True)


def _check_shards(folder: Path, files: Sequence[str], label: str) -> None:
    """A cached snapshot cut short by an interrupted download: an index naming shards that are not there."""
    for name in files:
        if not name.endswith(".index.json"):
            continue
        try:
            shards = set(json.loads((folder / name).read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a shard index; the loader will say what is wrong with it
        missing = sorted(shard for shard in shards if not (folder / shard).is_file())
        if missing:
            raise NotFoundError(
                f"{label}: its cached snapshot ({folder}) misses {_listing(missing)} named by {name}; "
                f"run `lmforge download {label}` with network access"
            )


def tell(message: str) -> None:
    """A line for the person at the terminal (stderr), about what is fetched or used and why."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[yellow]{escape(message)}[/]")


@contextmanager
def rich_download_bars() -> Iterator[type]:
    """A tqdm class for huggingface_hub whose bars (files fetched, bytes received) are rows of one rich
    Progress on stderr. huggingface_hub's switches still apply (HF_HUB_DISABLE_PROGRESS_BARS), and tqdm
    turns bars off when stderr is not a terminal, so logs and pipes get no bar noise."""
    from huggingface_hub.utils import tqdm as hub_tqdm
    from rich import filesize
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Amount(ProgressColumn):
        def render(self, task: Any) -> Text:
            done, total = int(task.completed), int(task.total or 0)
            if task.fields.get("unit") == "B":
                return Text(f"{filesize.decimal(done)} / {filesize.decimal(total)}")
            return Text(f"{done} / {total}")

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        Amount(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )

    class RichBar(hub_tqdm):
        rows = progress  # the one rich Progress every bar of this download is a row of

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "gui": True})  # gui: tqdm draws nothing itself
            self.rich_task = (
                None if self.disable else progress.add_task(self.desc or "", total=self.total, unit=self.unit)
            )

        def display(self, *args: Any, **kwargs: Any) -> None:
            # unset when tqdm's __init__ raised before ours set it (its __del__ still closes the bar)
            rich_task = getattr(self, "rich_task", None)
            if rich_task is not None:
                progress.update(rich_task, completed=self.n, total=self.total, description=self.desc)

        def clear(self, *args: Any, **kwargs: Any) -> None:
            """rich redraws the row; there is no tqdm line to clear."""

        def close(self) -> None:
            self.display()
            super().close()

    with progress:
        yield RichBar


# ------------------------------------------------------------------------------- lmforge download


@dataclass
class DownloadedFile:
    name: str
    size_bytes: int
    format: str  # as the scanner sniffed it from the bytes (safetensors, torch-zip, pickle, other, ...)
    verdict: str  # safe | unsafe | error (lmforge.files.scan)
    findings: list[str] = field(default_factory=list)


@dataclass
class DownloadReport:
    repo_id: str
    revision: str
    commit: str
    folder: str
    files: list[DownloadedFile]
    total_size_bytes: int
    skipped: list[str]
    verdict: str  # the worst of the files' verdicts
    cached_only: bool
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """As `lmforge scan`: 0 all safe, 1 something unsafe, 2 something unreadable."""
        return {"safe": 0, "unsafe": 1}.get(self.verdict, 2)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def download_model(
    model: str,
    *,
    revision: str | None = None,
    include: Sequence[str] | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
) -> DownloadReport:
    """Fetch what loading `model` (a hub id, org/name[@revision]) needs, or the files `include` names, into
    the cache, and scan every one: the report says where they are, their size, format and verdict."""
    from lmforge.files.scan import scan_file
    from lmforge.hub.reference import parse_hub_id

    repo_id, revision = parse_hub_id(model, revision)
    snapshot = fetch_snapshot(
        repo_id, revision, include=include, token=token, cache_dir=cache_dir, trust_remote_code=trust_remote_code
    )
    files = []
    for name in snapshot.files:
        scanned = scan_file(snapshot.folder / name)
        reasons = [finding.global_name or finding.message for finding in scanned.findings]
        files.append(
            DownloadedFile(
                name,
                scanned.size_bytes,
                scanned.format,
                scanned.verdict,
                list(dict.fromkeys(reasons)) + ([scanned.error] if scanned.error else []),
            )
        )
    verdicts = {item.verdict for item in files}
    verdict = "unsafe" if "unsafe" in verdicts else "error" if "error" in verdicts else "safe"
    notes = []
    if snapshot.pickled:
        notes.append("the repo has no safetensors: its weights are pickles, loaded only if the scan passes them")
    if snapshot.cached_only:
        notes.append("read from the cache without asking the hub")
    return DownloadReport(
        repo_id,
        snapshot.revision,
        snapshot.commit,
        str(snapshot.folder),
        files,
        sum(item.size_bytes for item in files),
        snapshot.skipped,
        verdict,
        snapshot.cached_only,
        notes,
    )
