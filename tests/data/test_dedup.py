from datasets import Dataset

from lmforge.data.dedup import drop_duplicates, find_duplicates, normalise_text
from lmforge.data.kinds import Kind
from lmforge.data.load import load_data

from .conftest import chat


def test_normalisation_ignores_case_whitespace_and_punctuation_but_keeps_tokens_apart():
    assert normalise_text("Hello,   World!") == normalise_text("hello world")
    assert normalise_text("12+3") != normalise_text("1+23")


def test_counts_exact_and_near_exact_separately():
    texts = ["Hello, World!", "hello world", "Hello, World!", "12+3", "1+23"]
    report = find_duplicates(Dataset.from_dict({"text": texts}), Kind.TEXT)
    assert (report.records, report.exact_duplicates, report.near_duplicates) == (5, 1, 1)


def test_drop_keeps_the_first_of_each_group():
    texts = ["Hello, World!", "hello world", "other", "HELLO WORLD"]
    kept, report = drop_duplicates(Dataset.from_dict({"text": texts}), Kind.TEXT)
    assert kept["text"] == ["Hello, World!", "other"]
    assert report.removed == 2


def test_chat_duplicates_compare_whole_conversations():
    rows = [
        chat("user", "q", "assistant", "a"),
        chat("user", "Q", "assistant", "A."),
        chat("user", "q", "assistant", "b"),
    ]
    dataset = Dataset.from_list(rows)
    assert find_duplicates(dataset, Kind.CHAT).near_duplicates == 1


def test_load_with_dedup_reports_removed_and_counts_balance(write_jsonl):
    path = write_jsonl([{"text": "same"}, {"text": "Same."}, {"text": "different"}, "{bad"])
    result = load_data(path, dedup=True, on_error="skip")
    report = result.report
    assert result.dataset["text"] == ["same", "different"]
    assert (report.records_in, report.records_out, report.rejected, report.duplicates_removed) == (4, 2, 1, 1)
