"""lmforge.hub.download against the local hub: what is fetched and where, resumes, offline, and every failure."""

import hashlib
import json
import socket
from pathlib import Path

import pytest

from lmforge.errors import HubError, NotFoundError, UserInputError
from lmforge.hub.download import download_model, fetch_snapshot, select_files

from .conftest import TOKEN


@pytest.mark.parametrize(
    ("names", "fetched"),
    [
        (
            [
                "config.json",
                "model.safetensors",
                "pytorch_model.bin",
                "original/consolidated.00.pth",
                "consolidated.safetensors",
                "training_args.bin",
                "optimizer.pt",
                "tokenizer.json",
                "tokenizer.model",
                "README.md",
                "modeling_x.py",
            ],
            ["config.json", "model.safetensors", "tokenizer.json", "tokenizer.model"],
        ),
        (
            [
                "config.json",
                "pytorch_model-00001-of-00002.bin",
                "pytorch_model-00002-of-00002.bin",
                "pytorch_model.bin.index.json",
                "optimizer.pt",
                "rng_state.pth",
                "merges.txt",
                "vocab.json",
            ],
            [
                "config.json",
                "merges.txt",
                "pytorch_model-00001-of-00002.bin",
                "pytorch_model-00002-of-00002.bin",
                "pytorch_model.bin.index.json",
                "vocab.json",
            ],
        ),
        (
            ["adapter_config.json", "adapter_model.bin", "training_args.bin", "README.md"],
            ["adapter_config.json", "adapter_model.bin"],
        ),
    ],
)
def test_loading_needs_one_set_of_weights_safetensors_first(names: list[str], fetched: list[str]) -> None:
    assert select_files(names).files == fetched
    assert select_files(names, trust_remote_code=True).files == sorted(
        fetched + [n for n in names if n.endswith(".py")]
    )


def test_a_repo_with_safetensors_and_pickles_brings_only_the_safetensors(online) -> None:
    report = download_model("org/tiny-both")
    names = {item.name for item in report.files}
    assert online.fetched("org/tiny-both") == names and "model.safetensors" in names
    assert report.skipped == ["original/consolidated.00.pth", "pytorch_model.bin", "training_args.bin"]
    assert Path(report.folder) == online.cache / "models--org--tiny-both" / "snapshots" / report.commit
    assert not [path for path in Path(report.folder).rglob("*") if path.suffix in (".bin", ".pth")]
    assert (report.verdict, report.exit_code) == ("safe", 0)
    assert {item.name: item.format for item in report.files}["model.safetensors"] == "safetensors"


def test_a_pickle_only_repo_is_fetched_after_saying_so_and_its_payload_is_found(online, capsys) -> None:
    report = download_model("org/evil")
    assert "org/evil has no safetensors weights: fetching the pickles pytorch_model.bin" in capsys.readouterr().err
    weights = {item.name: item for item in report.files}["pytorch_model.bin"]
    assert weights.verdict == "unsafe" and "os.makedirs" in weights.findings
    assert (report.verdict, report.exit_code) == ("unsafe", 1)


def test_two_revisions_are_two_snapshots_each_named_in_refs(online) -> None:
    main, v1 = download_model("org/tiny"), download_model("org/tiny@v1")
    assert main.commit != v1.commit

    def layers(folder: str) -> int:
        return json.loads((Path(folder) / "config.json").read_text())["num_hidden_layers"]

    assert (layers(main.folder), layers(v1.folder)) == (2, 1)
    refs = online.cache / "models--org--tiny" / "refs"
    assert ((refs / "main").read_text(), (refs / "v1").read_text()) == (main.commit, v1.commit)
    assert download_model("org/tiny", revision=v1.commit).folder == v1.folder
    with pytest.raises(UserInputError, match="org/tiny@v1 names revision v1 but --revision says main"):
        download_model("org/tiny@v1", revision="main")


def test_a_gated_repo_names_itself_and_how_to_log_in_and_a_token_opens_it(online, monkeypatch, tmp_path) -> None:
    with pytest.raises(
        HubError,
        match=r"^org/gated is gated on the hub: accept its conditions at http://127\.0\.0\.1:\d+"
        r"/org/gated, then log in .*`hf auth login`, HF_TOKEN or --token",
    ):
        download_model("org/gated")
    assert download_model("org/gated", token=TOKEN).verdict == "safe"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    snapshot = fetch_snapshot("org/gated", cache_dir=tmp_path / "elsewhere")
    assert snapshot.folder.is_relative_to(tmp_path / "elsewhere") and "model.safetensors" in snapshot.files


def test_a_missing_repo_or_revision_says_which(online) -> None:
    with pytest.raises(
        NotFoundError,
        match=r"^org/nope is not a local path, and the hub \(http://127\.0\.0\.1:\d+\) "
        "has no model of that name",
    ):
        fetch_snapshot("org/nope")
    with pytest.raises(NotFoundError, match="^org/tiny has no revision 'v9' on the hub"):
        fetch_snapshot("org/tiny", "v9")


def test_repos_without_loadable_weights_say_what_they_hold(online) -> None:
    with pytest.raises(
        UserInputError,
        match=r"org/gguf-only holds GGUF weights only \(tiny-Q4_K_M\.gguf, tiny-Q8_0\.gguf\): "
        r"fetch one with `lmforge download org/gguf-only --include 'tiny-Q4_K_M\.gguf'`",
    ):
        fetch_snapshot("org/gguf-only")
    report = download_model("org/gguf-only", include=["*Q8_0.gguf"])
    assert [(item.name, item.format) for item in report.files] == [("tiny-Q8_0.gguf", "gguf")]
    with pytest.raises(
        NotFoundError,
        match=r"org/no-weights has no weights lmforge can load \(it holds README\.md, "
        r"config\.json\): looked for \*\.safetensors",
    ):
        fetch_snapshot("org/no-weights")


def test_no_network_is_one_line_and_a_cached_model_is_used_instead(online, monkeypatch, capsys) -> None:
    fetch_snapshot("org/tiny")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
    with pytest.raises(
        HubError,
        match=rf"^the hub at http://127\.0\.0\.1:{closed} cannot be reached \(.+\), and "
        r"org/never-fetched is not in the hub cache .*: connect to the network",
    ) as error:
        fetch_snapshot("org/never-fetched")
    assert "\n" not in str(error.value)
    snapshot = fetch_snapshot("org/tiny")
    assert snapshot.cached_only and "model.safetensors" in snapshot.files
    assert "cannot be reached" in capsys.readouterr().err


def test_offline_reads_the_cache_without_a_request_and_says_what_is_missing(online, go_offline, tmp_path) -> None:
    fetch_snapshot("org/tiny")
    fetch_snapshot("org/tiny", what="config", cache_dir=tmp_path)  # a cache holding config.json only
    asked = len(online.requests)
    go_offline()
    snapshot = fetch_snapshot("org/tiny")
    assert snapshot.cached_only and {"config.json", "model.safetensors", "tokenizer.json"} <= set(snapshot.files)
    with pytest.raises(
        NotFoundError,
        match=r"org/never-fetched is not a local path and not in the hub cache .*, and "
        "HF_HUB_OFFLINE=1 forbids downloading it: run `lmforge download "
        "org/never-fetched` with network access first",
    ):
        fetch_snapshot("org/never-fetched")
    with pytest.raises(
        NotFoundError,
        match=r"org/tiny: its cached snapshot \(.*\) holds no weights \(only config\.json\); "
        "run `lmforge download org/tiny` with network access",
    ):
        fetch_snapshot("org/tiny", cache_dir=tmp_path)
    assert len(online.requests) == asked


def test_an_interrupted_transfer_resumes_and_cached_files_are_not_fetched_again(online, tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    # huggingface_hub resumes from the last chunk it wrote (10 MB chunks): smaller ones let a 0.5 MB file show it.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    fetch_snapshot("org/tiny", what="config", cache_dir=tmp_path)
    online.cut_once.add(("org/tiny", "model.safetensors"))
    start = len(online.requests)
    snapshot = fetch_snapshot("org/tiny", cache_dir=tmp_path)
    gets = [
        (path.rsplit("/", 1)[1], span)
        for method, path, span in online.requests[start:]
        if method == "GET" and "/resolve/" in path
    ]
    weights = [span for name, span in gets if name == "model.safetensors"]
    assert weights[0] is None and int(weights[1].removeprefix("bytes=").rstrip("-")) > 0  # resumed, not restarted
    assert "config.json" not in [name for name, _ in gets]  # already in the cache
    original = online.repos["org/tiny"].commits[snapshot.commit]["model.safetensors"]
    assert (
        hashlib.sha256((snapshot.folder / "model.safetensors").read_bytes()).digest()
        == hashlib.sha256(original).digest()
    )


@pytest.fixture
def hub_bars_on():  # type: ignore[no-untyped-def]
    """Another test in this process (a quickstart, which hides library bars) may have switched huggingface_hub's
    progress bars off globally; they are on for the test and put back as they were."""
    from huggingface_hub import utils as hub_utils

    was_disabled = hub_utils.are_progress_bars_disabled()
    hub_utils.enable_progress_bars()
    yield
    if was_disabled:
        hub_utils.disable_progress_bars()


@pytest.mark.usefixtures("hub_bars_on")
def test_the_download_bars_are_rich_rows_with_the_true_totals(online, tmp_path, monkeypatch) -> None:
    from contextlib import contextmanager

    from lmforge.hub import download

    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub's switch to draw bars even without a terminal
    drawn = []
    real = download.rich_download_bars

    @contextmanager
    def spy():
        with real() as bars:
            drawn.append(bars)
            yield bars

    monkeypatch.setattr(download, "rich_download_bars", spy)
    snapshot = fetch_snapshot("org/tiny", cache_dir=tmp_path)
    files = online.repos["org/tiny"].commits[snapshot.commit]
    rows = {task.description: task for task in drawn[0].rows.tasks}
    assert rows[f"Fetching {len(snapshot.files)} files"].completed == len(snapshot.files)
    received = [task for task in rows.values() if task.fields["unit"] == "B"]
    assert received and all(
        task.completed == task.total == sum(len(files[name]) for name in snapshot.files) for task in received
    )
