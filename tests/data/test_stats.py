import numpy as np
import pytest
from datasets import Dataset

from lmforge.data.kinds import Kind
from lmforge.data.load import load_data
from lmforge.data.stats import compute_stats, length_stats, load_tokenizer, preview_records
from lmforge.errors import NotFoundError, UserInputError

from .conftest import chat


def test_percentiles_are_real_record_lengths():
    stats = length_stats(np.arange(1, 101))
    assert (stats.p50, stats.p90, stats.p99, stats.max, stats.total) == (51, 91, 100, 100, 5050)


def test_chat_token_lengths_match_what_training_tokenizes(tiny_tokenizer):
    from lmforge.data.templates import resolve_template
    from lmforge.data.tokenize import encode_chat

    rows = [
        chat("user", "What is 12 plus 30?", "assistant", "42"),
        chat("user", "Reverse abc", "assistant", "cba " * 20),
    ]
    data = Dataset.from_list(rows)
    stats = compute_stats(data, Kind.CHAT, tokenizer=tiny_tokenizer, max_len=40)
    template = resolve_template(tiny_tokenizer)
    lengths = [len(encode_chat(r["messages"], tiny_tokenizer, template, max_len=10**6)["input_ids"]) for r in rows]
    assert stats.tokens.tokens.max == max(lengths)
    assert stats.tokens.tokens.total == sum(lengths)
    assert stats.tokens.over_max_len == sum(length > 40 for length in lengths) == 1
    assert stats.tokens.template == "tokenizer"
    assert stats.turns_mean == 2.0


def test_text_lengths_count_the_eos_separator(tiny_tokenizer):
    stats = compute_stats(Dataset.from_dict({"text": ["hello"]}), Kind.TEXT, tokenizer=tiny_tokenizer)
    assert stats.tokens.tokens.max == len(tiny_tokenizer("hello", add_special_tokens=False)["input_ids"]) + 1


def test_labels_and_duplicates_are_counted():
    loaded = load_data("builtin:sentiment")
    stats = compute_stats(loaded.dataset, loaded.kind, label_names=loaded.label_names)
    assert sum(stats.label_counts.values()) == 1000
    assert set(stats.label_counts) == {"negative", "positive"}
    assert stats.duplicates.records == 1000
    assert stats.tokens is None


def test_histogram_png_is_written_atomically(tmp_path, tiny_tokenizer):
    data = Dataset.from_dict({"text": [f"sentence {'x' * i}" for i in range(30)]})
    target = tmp_path / "plots" / "lengths.png"
    stats = compute_stats(data, Kind.TEXT, tokenizer=tiny_tokenizer, max_len=8, histogram_path=target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats.tokens.histogram_path == str(target)
    assert [p.name for p in target.parent.iterdir()] == ["lengths.png"]


def test_histogram_needs_a_tokenizer(tmp_path):
    with pytest.raises(UserInputError, match="needs --tokenizer"):
        compute_stats(Dataset.from_dict({"text": ["a"]}), Kind.TEXT, histogram_path=tmp_path / "h.png")


def test_tokenizer_folder_must_exist(tmp_path):
    with pytest.raises(NotFoundError, match="no tokenizer folder"):
        load_tokenizer(tmp_path / "missing")


def test_a_training_run_folder_gives_the_tokenizer_it_saved(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path / "run" / "final")
    assert load_tokenizer(tmp_path / "run").get_vocab() == tiny_tokenizer.get_vocab()


def test_preview_dims_exactly_the_masked_tokens(tiny_tokenizer, write_jsonl):
    loaded = load_data(write_jsonl([chat("system", "Be brief.", "user", "What is 2 plus 3?", "assistant", "5")]))
    (record,) = preview_records(loaded, tiny_tokenizer, n=5)
    runs = record.parts[0][1]
    trained = "".join(text for text, is_trained in runs if is_trained)
    assert trained == "5<|im_end|>"
    assert "What is 2 plus 3?" in "".join(text for text, is_trained in runs if not is_trained)
    assert not record.truncated


def test_preview_shows_both_sides_of_a_preference_and_truncation(tiny_tokenizer):
    loaded = load_data("builtin:arith-pref")
    (record,) = preview_records(loaded, tiny_tokenizer, n=1, max_len=8)
    assert [title for title, _ in record.parts] == ["chosen", "rejected"]
    assert record.truncated and record.tokens == 8
