"""Built-in synthetic datasets: canonical schemas, determinism, held-out splits, answer checking."""

from __future__ import annotations

import re

import pytest

from lmforge.data.builtin import (
    BUILTIN_DATASETS,
    NEGATIVE,
    POSITIVE,
    TASKS,
    check_answer,
    extract_answer,
    load_builtin,
    prompt_messages,
)
from lmforge.errors import NotFoundError, UserInputError

COLUMNS = {
    "builtin:corpus": ["text"],
    "builtin:arith-sft": ["messages"],
    "builtin:arith-pref": ["prompt", "chosen", "rejected"],
    "builtin:arith-kto": ["prompt", "completion", "label"],
    "builtin:sentiment": ["text", "text_pair", "label"],
}


@pytest.mark.parametrize("name", list(BUILTIN_DATASETS))
def test_every_builtin_has_its_canonical_columns_and_size(name):
    dataset = load_builtin(name, n=40)
    assert dataset.column_names == COLUMNS[name]
    assert len(dataset) == 40
    assert BUILTIN_DATASETS[name].kind in {"text", "chat", "preference", "unpaired_preference", "classification"}


def test_same_seed_same_data_other_seed_other_data():
    assert (
        load_builtin("arith-sft", n=50, seed=1)["messages"]
        == load_builtin("builtin:arith-sft", n=50, seed=1)["messages"]
    )
    assert load_builtin("arith-sft", n=50, seed=1)["messages"] != load_builtin("arith-sft", n=50, seed=2)["messages"]


@pytest.mark.parametrize("name", ["arith-sft", "sentiment"])
def test_held_out_split_never_shares_an_example_with_train_whatever_the_seeds(name):
    def keys(dataset):
        column = "messages" if "messages" in dataset.column_names else "text"
        return {str(row[column]) for row in dataset}

    train = keys(load_builtin(name, n=600, seed=0)) | keys(load_builtin(name, n=600, seed=7))
    test = keys(load_builtin(name, n=150, seed=0, split="test")) | keys(load_builtin(name, n=150, seed=3, split="test"))
    assert len(train) > 600 and len(test) > 150  # different seeds draw different examples ...
    assert not train & test  # ... yet never across the split boundary


def test_no_example_repeats_inside_a_split():
    messages = [str(m) for m in load_builtin("arith-sft", n=2000)["messages"]]
    assert len(set(messages)) == len(messages)


def test_all_tasks_appear_with_short_answers():
    rows = load_builtin("arith-sft", n=700)
    prompts = [m[0]["content"] for m in rows["messages"]]  # every task is drawn
    answers = [m[-1]["content"] for m in rows["messages"]]
    assert any("plus" in p for p in prompts) and any("minus" in p for p in prompts)
    assert any(p.startswith("Reverse") for p in prompts) and any(p.startswith("Sort") for p in prompts)
    assert any(p.startswith("Convert") for p in prompts) and any("How many times" in p for p in prompts)
    assert any("gets" in p for p in prompts) and len(TASKS) == 7
    assert max(len(a) for a in answers) <= 9  # a tiny model answers in a handful of tokens


def expected_answer(prompt: str) -> str | None:
    """An independent solver for the tasks whose prompt states everything needed."""
    if match := re.fullmatch(r"What is (\d+) (plus|minus) (\d+)\?", prompt):
        a, op, b = int(match[1]), match[2], int(match[3])
        return str(a + b if op == "plus" else a - b)
    if match := re.fullmatch(r"Reverse the letters (.+)\.", prompt):
        return " ".join(reversed(match[1].split()))
    if match := re.fullmatch(r"Sort the numbers (.+)\.", prompt):
        return " ".join(sorted(match[1].split()))
    if match := re.fullmatch(r"How many times does the letter (\w) appear in (.+)\?", prompt):
        return str(match[2].split().count(match[1]))
    if match := re.fullmatch(r"Convert (\d+) (km|m|cm|kg|l) to \w+\.", prompt):
        return str(int(match[1]) * {"km": 1000, "m": 100, "cm": 10, "kg": 1000, "l": 1000}[match[2]])
    if match := re.fullmatch(r"\w+ has (\d) \w+ and (gets|gives away) (\d).*", prompt):
        a, b = int(match[1]), int(match[3])
        return str(a + b if match[2] == "gets" else a - b)
    return None


def test_reference_answers_are_correct():
    for row in load_builtin("arith-sft", n=300):
        prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        assert expected_answer(prompt) == answer, prompt


def test_check_answer_scores_exact_match_after_normalisation():
    example = {
        "messages": [{"role": "user", "content": "Sort the numbers 3 1 2."}, {"role": "assistant", "content": "1 2 3"}]
    }
    assert check_answer(example, "1 2 3")
    assert check_answer(example, "The answer is 1, 2, 3.\nAnything after the first line is ignored.")
    assert not check_answer(example, "1 3 2")
    assert not check_answer(example, "")
    assert extract_answer("  42.  ") == "42"
    assert prompt_messages(example) == [example["messages"][0]]


def test_preference_pairs_reject_a_plausible_wrong_answer():
    for row in load_builtin("arith-pref", n=300):
        assert row["prompt"][-1]["role"] == "user"
        assert check_answer(row, row["chosen"][0]["content"])
        assert not check_answer(row, row["rejected"][0]["content"])
        assert len(row["rejected"][0]["content"]) <= len(row["chosen"][0]["content"]) + 3


def test_kto_labels_match_answer_correctness_and_are_balanced():
    rows = load_builtin("arith-kto", n=400)
    assert 120 < sum(rows["label"]) < 280
    for row in rows:
        correct = expected_answer(row["prompt"][0]["content"]) == row["completion"][0]["content"]
        assert correct == row["label"], row


def test_sentiment_is_balanced_labelled_and_reads_negation():
    rows = load_builtin("sentiment", n=400)
    assert rows.features["label"].names == ["negative", "positive"]
    assert 120 < sum(rows["label"]) < 280
    assert all(pair is None for pair in rows["text_pair"])
    negated = 0
    for text, label in zip(rows["text"], rows["label"]):
        word = text.rstrip(".").split()[-1]
        positive_word = word in POSITIVE
        assert positive_word or word in NEGATIVE
        if " not " in text:
            negated += 1
            assert label == int(not positive_word), text
        else:
            assert label == int(positive_word), text
    assert negated > 40


def test_corpus_covers_the_vocabulary_of_the_tasks():
    corpus_words = set(re.findall(r"[A-Za-z]+", " ".join(load_builtin("corpus", n=400)["text"])))
    task_words = set()
    for messages in load_builtin("arith-sft", n=200, split="test")["messages"]:
        task_words |= set(re.findall(r"[A-Za-z]+", messages[0]["content"]))
    assert task_words <= corpus_words


def test_corpus_holds_no_test_answer():
    corpus = " ".join(load_builtin("corpus", n=300)["text"])
    checked = 0
    for row in load_builtin("arith-sft", n=50, split="test"):
        prompt = row["messages"][0]["content"]
        if prompt.startswith("What is"):
            assert prompt not in corpus
            checked += 1
    assert checked > 0


def test_unknown_names_splits_and_sizes_are_one_line_errors():
    with pytest.raises(NotFoundError, match="builtin:arith-sft"):
        load_builtin("builtin:nope")
    with pytest.raises(UserInputError, match="split"):
        load_builtin("arith-sft", n=3, split="dev")
    with pytest.raises(UserInputError, match="distinct"):
        load_builtin("sentiment", n=2000, split="test")
    with pytest.raises(UserInputError, match="at least 1"):
        load_builtin("corpus", n=0)


def test_tasks_narrow_the_arith_sets_and_the_corpus():
    rows = load_builtin("arith-sft", n=60, tasks=["sort", "count"])
    prompts = [m[0]["content"] for m in rows["messages"]]
    assert all(p.startswith(("Sort", "How many times")) for p in prompts)
    assert any(p.startswith("Sort") for p in prompts) and any(p.startswith("How") for p in prompts)
    assert "plus" not in " ".join(load_builtin("corpus", n=20, tasks=["reverse"])["text"])
    assert load_builtin("arith-sft", n=30)["messages"] == load_builtin("arith-sft", n=30, tasks=list(TASKS))["messages"]
    with pytest.raises(NotFoundError, match="choose from add"):
        load_builtin("arith-pref", n=5, tasks=["divide"])
    with pytest.raises(UserInputError, match="no tasks"):
        load_builtin("sentiment", n=5, tasks=["sort"])


@pytest.mark.parametrize("name", ["builtin:sentiment", "builtin:arith-sft", "builtin:arith-pref", "builtin:corpus"])
@pytest.mark.parametrize("split", ["validation", "test"])
def test_every_held_out_split_loads_at_its_default_size(name, split):
    from lmforge.data.builtin import get_builtin, load_builtin

    dataset = load_builtin(name, split=split)
    assert len(dataset) == get_builtin(name).default_n // 8
