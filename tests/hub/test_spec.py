"""lmforge.hub.model_spec: what `lmforge plan MODEL` resolves, the hub in front of the planner's catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.errors import NotFoundError
from lmforge.hub.spec import model_spec
from lmforge.plan.models import resolve_model


def _fake_hub_cache(root: Path, repo_id: str, config: dict) -> Path:
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<commit>/config.json}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    return root


def test_snapshot_in_the_hf_cache_resolves_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = resolve_model("mistral-7b").config
    cache = _fake_hub_cache(tmp_path / "hub", "acme/mistral-custom", {**config, "num_hidden_layers": 4})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = model_spec("acme/mistral-custom")
    assert (spec.name, spec.hf_id, spec.num_layers, spec.sliding_window) == (
        "acme/mistral-custom",
        "acme/mistral-custom",
        4,
        4096,
    )


def test_hf_home_locates_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub_cache(tmp_path / "home" / "hub", "acme/tiny", resolve_model("gpt2").config)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert model_spec("acme/tiny").model_type == "gpt2"


def test_an_uncached_hub_id_offline_says_so_and_suggests_catalog_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotFoundError, match="not in the hub cache .*HF_HUB_OFFLINE=1.*did you mean .*llama-3.1-8b"):
        model_spec("meta-llama/llama-3.1-8")


def test_a_cached_snapshot_wins_over_the_catalog_entry_it_mirrors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = resolve_model("llama-3.2-1b").config
    _fake_hub_cache(tmp_path / "hub", "meta-llama/Llama-3.2-1B", {**config, "num_hidden_layers": 2})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cached, catalog = model_spec("meta-llama/Llama-3.2-1B"), resolve_model("meta-llama/Llama-3.2-1B")
    assert (cached.name, cached.num_layers) == ("meta-llama/Llama-3.2-1B", 2)
    assert (catalog.name, catalog.num_layers) == ("llama-3.2-1b", 16)


def test_names_and_paths_resolve_as_the_planner_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert model_spec("LLaMA-3.1-8B") == resolve_model("llama-3.1-8b")
    assert model_spec("meta-llama/Llama-3.1-8B").name == "llama-3.1-8b"  # not cached: the catalog entry
    with pytest.raises(NotFoundError, match="did you mean .*mixtral-8x7b"):
        model_spec("mixtrl-8x7b")
