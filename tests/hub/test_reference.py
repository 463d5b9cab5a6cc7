"""lmforge.hub.reference: every kind of model reference a command takes, resolved one way, with its errors."""

import json
import shutil
from pathlib import Path

import pytest

from lmforge.errors import NotFoundError, UnsafeFileError, UserInputError
from lmforge.hub.reference import is_hub_id, local_paths, locate_base, locate_model


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """A LoRA adapter whose adapter_config.json names the tiny Llama's folder as its base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("adapter")
    get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir), LoraConfig(r=2, target_modules=["q_proj"])
    ).save_pretrained(path)
    return path


def test_model_adapter_run_and_checkpoint_folders(tmp_path: Path, tiny_llama_dir: Path, adapter_dir: Path) -> None:
    model = locate_model(tiny_llama_dir)
    assert (model.kind, model.path, model.name, model.is_adapter) == (
        "model",
        tiny_llama_dir,
        tiny_llama_dir.name,
        False,
    )
    adapter = locate_model(adapter_dir)
    assert (adapter.kind, adapter.is_adapter) == ("adapter", True)
    assert locate_base(adapter).path == tiny_llama_dir

    run = tmp_path / "sft-run"
    for step in (2, 10):
        shutil.copytree(tiny_llama_dir, run / "checkpoints" / f"checkpoint-{step}")
    newest = locate_model(run)  # no final/ yet: its newest complete checkpoint
    assert (newest.kind, newest.path, newest.name) == (
        "checkpoint",
        run / "checkpoints" / "checkpoint-10",
        "sft-run/checkpoint-10",
    )
    assert locate_model(run / "checkpoints" / "checkpoint-2").kind == "checkpoint"
    shutil.copytree(adapter_dir, run / "final")
    finished = locate_model(run)
    assert (finished.kind, finished.path, finished.name, finished.is_adapter) == ("run", run / "final", "sft-run", True)
    shutil.copytree(tiny_llama_dir, tmp_path / "full-run" / "final")
    assert locate_model(tmp_path / "full-run").kind == "run" and not locate_model(tmp_path / "full-run").is_adapter


def test_an_adapter_base_is_found_as_written_or_relative_to_its_run(
    tmp_path: Path, tiny_llama_dir: Path, adapter_dir: Path
) -> None:
    shutil.copytree(tiny_llama_dir, tmp_path / "run" / "base")
    moved = shutil.copytree(adapter_dir, tmp_path / "run" / "final")
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "base"  # training records the path it was given
    (moved / "adapter_config.json").write_text(json.dumps(config))
    assert locate_base(locate_model(moved)).path == tmp_path / "run" / "base"
    config["base_model_name_or_path"] = str(tmp_path / "deleted-base")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(NotFoundError, match=r"its base model .*deleted-base does not exist; pass the base as MODEL"):
        locate_base(locate_model(moved))


def test_single_files_are_read_but_not_loaded(tmp_path: Path, tiny_llama_dir: Path) -> None:
    weights = locate_model(tiny_llama_dir / "model.safetensors", need="any")
    assert (weights.kind, weights.path) == ("weights-file", tiny_llama_dir / "model.safetensors")
    with pytest.raises(UserInputError, match="is a single weights file: give the folder that holds it"):
        locate_model(tiny_llama_dir / "model.safetensors")
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF" + bytes(60))
    assert locate_model(tmp_path / "tiny.gguf", need="any").kind == "gguf-file"
    with pytest.raises(UserInputError, match="is a GGUF file: this command loads transformers models"):
        locate_model(tmp_path / "tiny.gguf")


def test_paths_that_are_not_models_say_what_would_be(tmp_path: Path) -> None:
    assert locate_model(tmp_path, need="any").kind == "folder"
    with pytest.raises(
        NotFoundError,
        match="holds no config.json or adapter_config.json, no final/ and no checkpoints/checkpoint-N: not a model",
    ):
        locate_model(tmp_path)
    with pytest.raises(
        NotFoundError,
        match=r"^model \./nope does not exist: give a model folder, a training run .* "
        r"or a hub id \(org/name\[@revision\]\)",
    ):
        locate_model("./nope")
    with pytest.raises(UserInputError, match="a revision applies to hub ids only"):
        locate_model(tmp_path, revision="v1")


@pytest.mark.parametrize(
    ("text", "hub"),
    [
        ("org/name", True),
        ("org/name@v1.0", True),
        ("Org-1/na.me_2@0a1b", True),
        ("./org/name", False),
        ("/abs/path", False),
        ("name", False),
        ("org/name/file.bin", False),
        ("~/models/x", False),
    ],
)
def test_what_counts_as_a_hub_id(text: str, hub: bool) -> None:
    assert is_hub_id(text) is hub


def test_hub_ids_with_and_without_a_revision(online, tmp_path) -> None:
    main, v1 = locate_model("org/tiny"), locate_model("org/tiny@v1")
    assert (main.kind, main.repo_id, main.name, main.revision) == ("hub", "org/tiny", "org/tiny", None)
    assert (v1.name, v1.revision) == ("org/tiny@v1", "v1") and v1.commit != main.commit
    assert main.path == online.cache / "models--org--tiny" / "snapshots" / main.commit
    config = locate_model("org/tiny-both", need="config", cache_dir=tmp_path)  # the planner's fetch: config.json alone
    assert [path.name for path in config.path.iterdir()] == ["config.json"]


def test_scan_paths_are_local_paths_as_given_and_hub_ids_as_their_fetched_snapshot(
    online, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x")
    asked = len(online.requests)
    assert local_paths(["weights.bin", "missing.pt"]) == [Path("weights.bin"), Path("missing.pt")]
    assert len(online.requests) == asked  # local paths ask the hub nothing
    assert local_paths(["org/tiny"]) == [locate_model("org/tiny", need="any").path]


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(online, tmp_path, tiny_llama_dir, monkeypatch) -> None:
    shutil.copytree(tiny_llama_dir, tmp_path / "org" / "tiny")
    monkeypatch.chdir(tmp_path)
    asked = len(online.requests)
    assert locate_model("org/tiny").kind == "model" and len(online.requests) == asked


def test_a_hub_adapter_brings_its_hub_base(online) -> None:
    adapter = locate_model("org/tiny-lora")
    assert adapter.is_adapter and (adapter.path / "adapter_model.safetensors").is_file()
    base = locate_base(adapter)
    assert (base.repo_id, base.commit) == ("org/tiny", online.repos["org/tiny"].branches["main"])


def test_a_base_recorded_as_a_vanished_cache_snapshot_is_fetched_again_by_id(online, tmp_path, adapter_dir) -> None:
    commit = online.repos["org/tiny"].branches["v1"]
    moved = shutil.copytree(adapter_dir, tmp_path / "adapter")
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = f"/gone/hub/models--org--tiny/snapshots/{commit}"  # a run trained from a hub id
    (moved / "adapter_config.json").write_text(json.dumps(config))
    base = locate_base(locate_model(moved))
    assert (base.repo_id, base.commit, base.path.name) == ("org/tiny", commit, commit)


def test_a_pickle_payload_is_refused_before_anything_loads_it(online) -> None:
    with pytest.raises(UnsafeFileError, match=r"pytorch_model\.bin \(os\.makedirs\).*--trust-pickle"):
        locate_model("org/evil")
    assert locate_model("org/evil", trust_pickle=True).kind == "hub"  # the override resolves; nothing is loaded here


def test_a_repo_needing_its_own_code_is_refused_naming_the_files(online, tmp_path) -> None:
    with pytest.raises(
        UserInputError,
        match=r"org/remote-code needs its own Python code to load \(configuration_evil\.py, "
        r"modeling_evil\.py\), which would run .* only with --trust-remote-code",
    ):
        locate_model("org/remote-code", cache_dir=tmp_path)
    assert not list(tmp_path.glob("models--org--remote-code/snapshots/*/*.py"))  # not even downloaded
    trusted = locate_model("org/remote-code", trust_remote_code=True, cache_dir=tmp_path)
    assert sorted(path.name for path in trusted.path.glob("*.py")) == ["configuration_evil.py", "modeling_evil.py"]
