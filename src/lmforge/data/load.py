"""Load any supported source into one canonical `datasets.Dataset`, validating every record.

Sources: .jsonl, .json (an array, {"data": [...]}, or JSON lines), .csv/.tsv, .parquet, .txt
(one record per non-blank line, the convention of `datasets`' text loader), a folder or glob of
those, a folder written by save_to_disk, "builtin:NAME", or a hub dataset name.

Bounded memory: files are read record by record and each canonical record goes straight into an
Arrow file on disk (datasets' ArrowWriter), which the returned Dataset memory-maps. We write it
ourselves rather than through Dataset.from_generator because from_generator caches by a hash of
the generator: an edited file or a changed --on-error would silently reuse a stale build and
skip the counting this module must do on every load.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import csv
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.data.dedup import drop_duplicates
from lmforge.data.kinds import (
    ANY_CHAT,
    CLI_OPTIONS,
    FORMAT_KIND,
    INVALID_JSON,
    LABEL_NOT_IN_SET,
    NON_UTF8,
    Kind,
    OptionNames,
    RecordProblem,
    apply_columns,
    detect_layout,
    features_for,
    normalise_record,
    parse_columns,
    resolve_format,
    to_format,
)
from lmforge.data.validate import OnError, ProblemCollector, ValidationReport, _StopLoading
from lmforge.errors import FormatError, NotFoundError, UserInputError
from lmforge.fileio import atomic_path
from lmforge.hub.reference import is_hub_id

if TYPE_CHECKING:
    from datasets import Dataset

FILE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                 ".parquet": "parquet", ".txt": "txt"}  # fmt: skip
# Cells of a CSV that hold a JSON list (a conversation written into a spreadsheet column).
_JSON_CELLS = {"messages", "conversations", "history", "prompt", "chosen", "rejected", "completion"}
_WRITER_BATCH_ROWS = 1000


@dataclass
class LoadResult:
    """A canonical dataset, its kind, and the account of every record read."""

    dataset: Dataset
    kind: Kind
    report: ValidationReport
    format: str  # the input layout detected or forced (alpaca, sharegpt, ...)
    sources: list[str] = field(default_factory=list)
    label_names: list[str] | None = None  # classification only; also on dataset.features["label"]


# A raw item from a reader: where it is, the parsed record (or None), the problem reading it, the raw value.
_Item = tuple[str, Any, RecordProblem | None, Any]


def load_data(
    source: str | os.PathLike[str],
    *,
    kind: str | Kind | None = None,
    columns: str | Mapping[str, str] | None = None,
    on_error: OnError = "fail",
    rejects_path: str | os.PathLike[str] | None = None,
    labels: list[str] | None = None,
    split: str | None = None,
    dedup: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    names: OptionNames = CLI_OPTIONS,
) -> LoadResult:
    """Read `source`, detect (or force) its kind, normalise every record to the canonical schema.

    on_error="fail" raises one UserInputError listing the first 20 problems as "file:line: reason";
    "skip" drops them, counts them by reason in the report and, with `rejects_path`, writes each
    one (location, reason, raw record) to a JSONL rejects file atomically. `dedup=True` removes exact
    and near-exact duplicates (counted in report.duplicates_removed). `labels` fixes the
    classification label set (others are rejected). `split` picks a split of a DatasetDict or hub set.
    `names` says how the caller's user sets kind, columns and on_error, for the errors (CONFIG_OPTIONS in
    training). A column mapping naming a column no record has is an error, never silently ignored.
    """
    mapping = parse_columns(columns)
    forced = resolve_format(kind)
    name = str(source)
    if name.startswith("builtin:"):
        items, native_labels, sources, builtin_kind = _builtin_items(name, split)
        forced = forced or resolve_format(builtin_kind)
    else:
        items, native_labels, sources = _source_items(name, split, progress)
    if labels is not None and not labels:
        raise UserInputError("the label set is empty; pass label names such as --labels negative,positive")
    label_names = list(labels) if labels is not None else native_labels

    report = ValidationReport()
    work_dir = Path(cache_dir) if cache_dir is not None else _session_cache_dir()
    work_dir.mkdir(parents=True, exist_ok=True)
    # Closing the reader (even after fail-mode stops early) closes its file and progress bar now.
    with contextlib.closing(items):  # type: ignore[type-var]
        if on_error == "skip" and rejects_path is not None:
            with atomic_path(rejects_path) as temporary, open(temporary, "w", encoding="utf-8") as rejects:
                collector = ProblemCollector(on_error, report, rejects, names)
                fmt, dataset, label_names = _build(items, forced, mapping, collector, label_names, work_dir, name)
            report.rejects_path = str(rejects_path)
        else:
            collector = ProblemCollector(on_error, report, names=names)
            fmt, dataset, label_names = _build(items, forced, mapping, collector, label_names, work_dir, name)
    if dedup:
        dataset, duplicates = drop_duplicates(dataset, FORMAT_KIND[fmt])
        report.duplicates_removed = duplicates.removed
        report.records_out = len(dataset)
    report.check_counts()
    return LoadResult(dataset, FORMAT_KIND[fmt], report, fmt, sources, label_names)


def default_rejects_path(source: str | os.PathLike[str], beside: str | os.PathLike[str] | None = None) -> Path:
    """Where `on_error="skip"` puts bad records when the user named no file: beside the output a command writes
    (OUT.rejects.jsonl), else SOURCE-STEM.rejects.jsonl in the working directory, never inside the source's
    folder (it may be read-only, a hub cache, or a builtin: name that is no folder at all)."""
    if beside is not None:
        beside = Path(beside)
        return beside.with_name(beside.name + ".rejects.jsonl")
    stem = re.sub(r"[^\w.-]+", "_", Path(str(source).rstrip("/")).stem or "data")
    return Path.cwd() / f"{stem}.rejects.jsonl"


def _build(
    items: Iterator[_Item],
    forced: str | None,
    mapping: dict[str, str],
    collector: ProblemCollector,
    label_names: list[str] | None,
    work_dir: Path,
    source: str,
) -> tuple[str, Dataset, list[str] | None]:
    """Stream items through normalisation into an Arrow file; returns (layout, dataset, label names)."""
    import pyarrow as pa
    from datasets import Dataset
    from datasets.arrow_writer import ArrowWriter

    items, fmt = _detect(items, forced, mapping, source, collector.names)
    kind = FORMAT_KIND[fmt]
    labeller = _Labeller(label_names) if kind is Kind.CLASSIFICATION else None
    features = features_for(kind, labeller.names if labeller and labeller.fixed else None)
    arrow_file = Path(tempfile.mkstemp(dir=work_dir, prefix="load-", suffix=".arrow")[1])
    report = collector.report
    stopped = False
    pending: list[dict[str, Any]] = []
    schema = features.arrow_schema
    columns_seen: set[str] = set()  # every column of every record read, to check the column mapping

    def flush() -> None:
        # Canonical records are plain str/list/bool/int, so pyarrow converts a batch in C++.
        writer.write_table(pa.Table.from_pylist(pending, schema=schema))
        pending.clear()

    with ArrowWriter(features=features, path=str(arrow_file), writer_batch_size=_WRITER_BATCH_ROWS) as writer:
        try:
            for location, record, problem, raw in items:
                report.records_in += 1
                if isinstance(record, dict):
                    columns_seen.update(record)
                try:
                    if problem is not None:
                        raise problem
                    canonical = normalise_record(apply_columns(record, mapping), fmt, mapping)
                    if labeller is not None:
                        canonical["label"] = labeller.encode(canonical["label"])
                except RecordProblem as bad:
                    collector.reject(location, bad, raw if raw is not None else record)
                    continue
                pending.append(canonical)
                report.records_out += 1
                if len(pending) == _WRITER_BATCH_ROWS:
                    flush()
        except _StopLoading:
            stopped = True
        if pending or not report.records_out:
            flush()
        writer.finalize()
    _check_mapping(mapping, columns_seen, report.records_in, source, collector.names)
    collector.finish(source, stopped_early=stopped)
    dataset = Dataset.from_file(str(arrow_file))
    if labeller is not None and not labeller.fixed:
        dataset, names = labeller.assign_ids(dataset)
        return fmt, dataset, names
    return fmt, dataset, labeller.names if labeller else None


def _check_mapping(
    mapping: dict[str, str],
    columns: set[str],
    records: int,
    source: str,
    names: OptionNames,
    where: str = "none of the {records} records read from {source} has it",
) -> None:
    """A mapping onto a column the data lacks is named, rather than ignored or hidden behind a vaguer error."""
    missing = [
        f"'{column}' (mapped to '{canonical}')" for canonical, column in mapping.items() if column not in columns
    ]
    if missing:
        shown = ", ".join(sorted(columns)) or "none"
        raise UserInputError(
            f"{names.columns}: column {', '.join(missing)} not found: "
            f"{where.format(records=records, source=source)}; its columns are [{shown}]"
        )


def _detect(
    items: Iterator[_Item], forced: str | None, mapping: dict[str, str], source: str, names: OptionNames
) -> tuple[Iterator[_Item], str]:
    """The layout from the first readable record (keeping what was read for the real pass).

    A forced "chat" detects among the chat layouts and otherwise checks records as OpenAI messages.
    """
    if forced is not None and forced != ANY_CHAT:
        return items, forced
    seen: list[_Item] = []
    for item in items:
        seen.append(item)
        if item[2] is None and isinstance(item[1], dict):
            columns = apply_columns(item[1], mapping)
            if forced == ANY_CHAT:
                return chain(seen, items), _chat_layout(columns)
            try:
                return chain(seen, items), detect_layout(columns, names)
            except UserInputError:
                _check_mapping(mapping, set(item[1]), 1, source, names, where=f"the first record of {source} lacks it")
                raise
    if not seen:
        raise UserInputError(f"{source} holds no records")
    # Every record is unreadable: report them all under a harmless layout.
    return iter(seen), "messages" if forced == ANY_CHAT else "text"


def _chat_layout(columns: dict[str, Any]) -> str:
    """The chat layout these columns are in; OpenAI messages when they are in none."""
    try:
        layout = detect_layout(columns)
    except UserInputError:
        return "messages"
    return layout if FORMAT_KIND[layout] is Kind.CHAT else "messages"


class _Labeller:
    """Classification labels -> ids: against a known label set while streaming, or collected and
    assigned (sorted names, or 0..max for integer labels) after the pass."""

    def __init__(self, names: list[str] | None) -> None:
        self.fixed = names is not None
        self.names = list(names) if names is not None else None
        self.index = {name: i for i, name in enumerate(self.names or [])}
        self.seen_names: set[str] = set()
        self.max_id = -1

    def encode(self, label: int | str) -> int | str:
        if self.fixed:
            assert self.names is not None
            if isinstance(label, int):
                if label >= len(self.names):
                    raise RecordProblem(
                        LABEL_NOT_IN_SET, f"{LABEL_NOT_IN_SET}: label {label} but only {len(self.names)} labels"
                    )
                return label
            if label not in self.index:
                shown = ", ".join(self.names[:10])
                raise RecordProblem(LABEL_NOT_IN_SET, f"{LABEL_NOT_IN_SET}: '{label}' is not one of [{shown}]")
            return self.index[label]
        if isinstance(label, int):
            self.max_id = max(self.max_id, label)
        else:
            self.seen_names.add(label)
        return str(label)

    def assign_ids(self, dataset: Dataset) -> tuple[Dataset, list[str]]:
        """Cast the collected string labels to ids: sorted names, or "0".."max" for integer labels."""
        from datasets import ClassLabel

        integers = {str(i) for i in range(self.max_id + 1)}
        names = sorted(self.seen_names | integers) if self.seen_names else sorted(integers, key=int)
        with _quiet_datasets():
            dataset = dataset.cast_column("label", ClassLabel(names=names))
        return dataset, names


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hide datasets' own progress bar for an internal step the user did not ask for."""
    from datasets import utils as datasets_utils

    was_enabled = not datasets_utils.are_progress_bars_disabled()
    datasets_utils.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets_utils.enable_progress_bars()


# ---------------------------------------------------------------- sources


def _session_cache_dir() -> Path:
    """One temporary folder per process for the Arrow files; removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix="lmforge-data-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _source_items(
    source: str, split: str | None, progress: bool
) -> tuple[Iterator[_Item], list[str] | None, list[str]]:
    path = Path(source).expanduser()
    if path.is_dir() and _is_saved_dataset(path):
        from datasets import load_from_disk

        return _dataset_items(load_from_disk(str(path)), split, source)
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES and not _hidden(p, path)
        )
        if not files:
            raise NotFoundError(f"{source} holds no data files ({', '.join(sorted(FILE_SUFFIXES))})")
    elif path.is_file():
        files = [path]
    elif glob.has_magic(source):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True) if Path(p).is_file())
        if not files:
            raise NotFoundError(f"no files match {source}")
    elif path.suffix.lower() in FILE_SUFFIXES or (os.sep in source and not is_hub_id(source)):
        raise NotFoundError(f"no such file or folder: {source}")
    else:
        return _hub_items(source, split)
    for file in files:
        if file.suffix.lower() not in FILE_SUFFIXES:
            raise FormatError(
                f"{file}: unsupported file type '{file.suffix}'; use one of {', '.join(sorted(FILE_SUFFIXES))}"
            )
    native = _parquet_label_names(files)
    return _with_progress(files, progress), native, [str(f) for f in files]


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def _is_saved_dataset(path: Path) -> bool:
    return (
        (path / "dataset_info.json").is_file()
        or (path / "dataset_dict.json").is_file()
        or (path / "state.json").is_file()
    )


def _file_items(file: Path, advance: Callable[[int], None]) -> Iterator[_Item]:
    reader = FILE_SUFFIXES[file.suffix.lower()]
    if reader == "jsonl":
        return _jsonl_items(file, advance)
    if reader == "json":
        return _json_items(file, advance)
    if reader in ("csv", "tsv"):
        return _csv_items(file, "\t" if reader == "tsv" else ",", advance)
    if reader == "txt":
        return _txt_items(file, advance)
    return _parquet_items(file, advance)


def _with_progress(files: list[Path], progress: bool) -> Iterator[_Item]:
    if not progress:
        for file in files:
            yield from _file_items(file, lambda _: None)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    total = sum(file.stat().st_size for file in files)
    with Progress(TextColumn("reading"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("read", total=total)
        for file in files:
            yield from _file_items(file, lambda n: bar.advance(task, n))


def _lines(file: Path, advance: Callable[[int], None]) -> Iterator[tuple[str, str, RecordProblem | None]]:
    """Each non-blank line with its location, decoded as UTF-8; a line that is not UTF-8 comes
    with its NON_UTF8 problem, decoded with replacement characters for the report. A byte-order mark
    (Windows editors write one) is dropped from line 1, so the first record is read like the others."""
    with open(file, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            advance(len(raw))
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if not raw.strip():
                continue
            try:
                yield f"{file}:{number}", raw.decode("utf-8"), None
            except UnicodeDecodeError as error:
                problem = RecordProblem(NON_UTF8, f"{NON_UTF8} at byte {error.start} of the line")
                yield f"{file}:{number}", raw.decode("utf-8", "replace"), problem


def _jsonl_items(file: Path, advance: Callable[[int], None]) -> Iterator[_Item]:
    for location, text, problem in _lines(file, advance):
        if problem is not None:
            yield location, None, problem, text.rstrip("\n")
            continue
        try:
            yield location, json.loads(text), None, None
        except json.JSONDecodeError as error:
            detail = f"{INVALID_JSON} ({error.msg} at column {error.colno})"
            yield location, None, RecordProblem(INVALID_JSON, detail), text.rstrip("\n")


def _json_items(file: Path, advance: Callable[[int], None]) -> Iterator[_Item]:
    """A JSON array (each element located by its line), {"data": [...]}, one object, or JSON lines."""
    data = file.read_bytes()
    advance(len(data))
    try:
        text = data.decode("utf-8-sig")  # as the CSV and line readers: a byte-order mark is not content
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise FormatError(f"{file}:{line}: {NON_UTF8}; re-save the file as UTF-8") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # several objects, one per line: JSON lines under a .json name
            yield from _jsonl_items(file, lambda _: None)
            return
        raise FormatError(f"{file}:{error.lineno}: {INVALID_JSON} ({error.msg} at column {error.colno})") from error
    if isinstance(document, list):
        yield from _array_items(file, text)
        return
    if isinstance(document, dict):
        lists = [
            key for key, value in document.items() if isinstance(value, list) and value and isinstance(value[0], dict)
        ]
        key = "data" if "data" in lists else (lists[0] if len(lists) == 1 and len(document) == 1 else None)
        if key is not None:
            for number, record in enumerate(document[key], start=1):
                yield f"{file}:{key}[{number - 1}]", record, None, None
            return
    yield f"{file}:1", document, None, None


def _array_items(file: Path, text: str) -> Iterator[_Item]:
    """Elements of a (valid) top-level array with the line each starts on."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    line, counted_to = 1, 0
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return
        line += text.count("\n", counted_to, position)
        counted_to = position
        value, position = decoder.raw_decode(text, position)
        yield f"{file}:{line}", value, None, None


def _csv_items(file: Path, delimiter: str, advance: Callable[[int], None]) -> Iterator[_Item]:
    bad_lines: set[int] = set()

    def lines() -> Iterator[str]:
        with open(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                advance(len(raw))
                try:
                    yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    bad_lines.add(number)
                    yield raw.decode("utf-8", "replace")

    reader = csv.DictReader(lines(), delimiter=delimiter)
    first_line = 2  # line 1 is the header
    for row in reader:
        last_line = reader.line_num
        location = f"{file}:{first_line}"
        span = set(range(first_line, last_line + 1))
        first_line = last_line + 1
        row.pop(None, None)  # cells beyond the header
        if span & bad_lines:
            yield location, None, RecordProblem(NON_UTF8, f"{NON_UTF8} in this row"), row
            continue
        yield location, {key: _csv_cell(key, value) for key, value in row.items()}, None, row


def _csv_cell(key: str, value: str | None) -> Any:
    if value is not None and key in _JSON_CELLS and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _txt_items(file: Path, advance: Callable[[int], None]) -> Iterator[_Item]:
    for location, text, problem in _lines(file, advance):
        line = text.rstrip("\r\n")
        if problem is not None:
            yield location, None, problem, line
        else:
            yield location, {"text": line}, None, None


def _parquet_items(file: Path, advance: Callable[[int], None]) -> Iterator[_Item]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file)
    row = 0
    for batch in parquet.iter_batches(batch_size=_WRITER_BATCH_ROWS):
        for record in batch.to_pylist():
            row += 1
            yield f"{file}:row {row}", record, None, None
    advance(file.stat().st_size)


def _parquet_label_names(files: list[Path]) -> list[str] | None:
    """Label names stored by `datasets` in a parquet file's schema (a ClassLabel column)."""
    for file in files:
        if file.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq
            from datasets import ClassLabel, Features

            features = Features.from_arrow_schema(pq.read_schema(file))
            if isinstance(features.get("label"), ClassLabel):
                return list(features["label"].names)
    return None


def _dataset_items(loaded: Any, split: str | None, source: str) -> tuple[Iterator[_Item], list[str] | None, list[str]]:
    """Rows of a datasets Dataset (or one split of a DatasetDict), located by row number."""
    from datasets import ClassLabel, DatasetDict

    if isinstance(loaded, DatasetDict):
        names = list(loaded)
        chosen = split or ("train" if "train" in loaded else (names[0] if len(names) == 1 else None))
        if chosen not in loaded:
            raise UserInputError(f"{source} has splits {', '.join(names)}; pick one with --split")
        loaded, source = loaded[chosen], f"{source}[{chosen}]"
    label = loaded.features.get("label")
    native = list(label.names) if isinstance(label, ClassLabel) else None

    def rows() -> Iterator[_Item]:
        for number, record in enumerate(loaded, start=1):
            yield f"{source}:row {number}", record, None, None

    return rows(), native, [source]


def _builtin_items(name: str, split: str | None) -> tuple[Iterator[_Item], list[str] | None, list[str], str]:
    """A built-in synthetic set (data/builtin.py), checked like any other source; returns its layout too."""
    from lmforge.data import builtin

    spec = builtin.get_builtin(name)
    items, native, sources = _dataset_items(builtin.load_builtin(name, split=split or "train"), None, spec.name)
    return items, native, sources, spec.kind


def _hub_items(name: str, split: str | None) -> tuple[Iterator[_Item], list[str] | None, list[str]]:
    """A dataset from the Hugging Face Hub; offline or unknown gives one clear error."""
    import datasets

    if not datasets.config.HF_HUB_OFFLINE and not _hub_reachable():
        raise NotFoundError(
            f"'{name}' is not a local file or folder, and the Hugging Face Hub is unreachable (offline?); "
            "pass a path to a local file, folder or builtin:NAME"
        )
    try:
        loaded = datasets.load_dataset(name, split=split)
    except (ConnectionError, OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NotFoundError(
            f"'{name}' is not a local file or folder, and loading it from the Hugging Face Hub failed "
            f"(offline or not found: {first_line}); pass a path to a local file instead"
        ) from error
    return _dataset_items(loaded, split, name)


def _hub_reachable(timeout_seconds: float = 3.0) -> bool:
    """One quick TCP connect to the hub endpoint, so an offline machine fails in seconds rather
    than after the hub client's minute of retries."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection(
            (endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=timeout_seconds
        ).close()
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- writing


def save_jsonl(
    dataset: Dataset,
    path: str | os.PathLike[str],
    kind: Kind,
    *,
    fmt: str | None = None,
    label_names: list[str] | None = None,
) -> int:
    """Write a canonical dataset as JSONL atomically (in layout `fmt`, default canonical); returns rows written.

    Streams in batches so a large set never sits in memory as Python objects.
    """
    target_format = resolve_format(fmt) if fmt else None
    written = 0
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for batch in dataset.iter(batch_size=_WRITER_BATCH_ROWS):
            keys = list(batch)
            for values in zip(*(batch[key] for key in keys), strict=True):
                record = dict(zip(keys, values, strict=True))
                if target_format is not None or kind is Kind.CLASSIFICATION:
                    record = to_format(record, kind, target_format or _canonical_format(kind), label_names)
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
    return written


def _canonical_format(kind: Kind) -> str:
    return "messages" if kind is Kind.CHAT else kind.value
