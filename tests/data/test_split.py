import json

import pytest
from datasets import ClassLabel, Dataset, Features, Value

from lmforge.data.dedup import normalise_text
from lmforge.data.kinds import Kind
from lmforge.data.load import load_data
from lmforge.data.split import parse_ratios, split_dataset, write_splits
from lmforge.errors import UserInputError

from .conftest import chat

DOCS = Dataset.from_dict({"text": [f"document number {i}" for i in range(10)]})


def test_fixed_assignment_is_stable_across_machines():
    # sha256-based: these exact assignments must never change between runs, platforms or versions.
    parts = split_dataset(DOCS, Kind.TEXT, seed=0).splits
    assert parts["validation"]["text"] == ["document number 0"]
    assert parts["test"]["text"] == ["document number 4"]
    assert len(parts["train"]) == 8
    parts = split_dataset(DOCS, Kind.TEXT, seed=1).splits
    assert (parts["validation"]["text"], parts["test"]["text"]) == (["document number 7"], ["document number 6"])


def test_same_seed_same_split_other_seed_other_split():
    data = load_data("builtin:arith-sft").dataset
    first = split_dataset(data, Kind.CHAT, seed=5).splits
    again = split_dataset(data, Kind.CHAT, seed=5).splits
    other = split_dataset(data, Kind.CHAT, seed=6).splits
    assert first["test"][:] == again["test"][:]
    assert first["test"][:] != other["test"][:]
    assert {name: len(part) for name, part in first.items()} == {"train": 1600, "validation": 200, "test": 200}


def test_same_prompt_never_crosses_splits():
    rows = [chat("user", f"question {i % 7}", "assistant", f"answer {i}") for i in range(60)]
    rows += [chat("user", "Question 3!", "assistant", "shouted")]  # near-exact prompt duplicate
    result = split_dataset(Dataset.from_list(rows), Kind.CHAT, seed=0)

    def prompts(name):
        return {normalise_text(r["messages"][0]["content"]) for r in result.splits[name]}

    assert not prompts("train") & prompts("test")
    assert not prompts("train") & prompts("validation")
    assert not prompts("validation") & prompts("test")
    assert result.report.groups == 7
    assert sum(result.report.counts.values()) == 61


def test_classification_is_stratified():
    labels = [0] * 90 + [1] * 10
    features = Features({"text": Value("string"), "text_pair": Value("string"), "label": ClassLabel(names=["a", "b"])})
    data = Dataset.from_dict(
        {"text": [f"t{i}" for i in range(100)], "text_pair": [None] * 100, "label": labels}, features=features
    )
    result = split_dataset(data, Kind.CLASSIFICATION, seed=0, label_names=["a", "b"])
    assert result.report.label_counts == {
        "train": {"a": 72, "b": 8},
        "validation": {"a": 9, "b": 1},
        "test": {"a": 9, "b": 1},
    }


def test_two_ratios_mean_train_and_test():
    parts = split_dataset(DOCS, Kind.TEXT, ratios="9,1").splits
    assert {name: len(part) for name, part in parts.items()} == {"train": 9, "test": 1}


@pytest.mark.parametrize("spec", ["8,1", "a,b,c", "0,1,1", "1,2,3,4", "-1,1,1"])
def test_ratio_parsing(spec):
    if spec == "8,1":
        assert parse_ratios(spec) == (8.0, 1.0)
    else:
        with pytest.raises(UserInputError):
            parse_ratios(spec)


def test_write_splits_as_jsonl_with_a_summary(tmp_path):
    loaded = load_data("builtin:sentiment")
    result = split_dataset(loaded.dataset, loaded.kind, seed=0, label_names=loaded.label_names)
    write_splits(result, tmp_path / "out", loaded.kind)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["split.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    summary = json.loads((tmp_path / "out" / "split.json").read_text())
    assert summary["counts"] == {"train": 800, "validation": 100, "test": 100}
    assert summary["label_names"] == ["negative", "positive"]
    test = load_data(tmp_path / "out" / "test.jsonl")
    assert len(test.dataset) == 100 and test.label_names == ["negative", "positive"]


def test_write_splits_save_to_disk(tmp_path):
    result = split_dataset(DOCS, Kind.TEXT, seed=0)
    write_splits(result, tmp_path / "dd", Kind.TEXT, save_to_disk=True)
    assert load_data(tmp_path / "dd", split="test").dataset["text"] == ["document number 4"]
