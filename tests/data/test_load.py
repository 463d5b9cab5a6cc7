import json

import pytest

from lmforge.data.kinds import Kind
from lmforge.data.load import default_rejects_path, load_data, save_jsonl
from lmforge.errors import FormatError, NotFoundError, UserInputError

from .conftest import chat

ALPACA = [
    {"instruction": "Add 2 and 3", "input": "", "output": "5"},
    {"instruction": "Reverse", "input": "abc", "output": "cba"},
]


def test_jsonl_alpaca_is_canonical_chat_on_disk(write_jsonl):
    result = load_data(write_jsonl(ALPACA))
    assert (result.kind, result.format) == (Kind.CHAT, "alpaca")
    assert result.dataset[1]["messages"] == [
        {"role": "user", "content": "Reverse\nabc"},
        {"role": "assistant", "content": "cba"},
    ]
    # Memory-mapped Arrow on disk, not a Python list.
    assert result.dataset.cache_files
    assert (result.report.records_in, result.report.records_out) == (2, 2)


@pytest.mark.parametrize(
    ("records", "kind"),
    [
        ([{"text": "a document"}], Kind.TEXT),
        ([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}], Kind.CHAT),
        ([chat("system", "s", "user", "u", "assistant", "a")], Kind.CHAT),
        ([{"prompt": "p", "chosen": "c", "rejected": "r"}], Kind.PREFERENCE),
        ([{"prompt": "p", "completion": "c", "label": True}], Kind.UNPAIRED_PREFERENCE),
        ([{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}], Kind.CLASSIFICATION),
    ],
)
def test_every_kind_loads_from_jsonl(write_jsonl, records, kind):
    result = load_data(write_jsonl(records))
    assert result.kind is kind
    assert len(result.dataset) == len(records)


def test_classification_label_names_are_kept_as_classlabel(write_jsonl):
    result = load_data(write_jsonl([{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]))
    assert result.label_names == ["neg", "pos"]
    assert result.dataset.features["label"].names == ["neg", "pos"]
    assert result.dataset["label"] == [1, 0]


def test_integer_labels_become_ids_with_names(write_jsonl):
    result = load_data(write_jsonl([{"text": "a", "label": 2}, {"text": "b", "label": 0}]))
    assert result.label_names == ["0", "1", "2"]
    assert result.dataset["label"] == [2, 0]


def test_given_label_set_fixes_ids(write_jsonl):
    result = load_data(write_jsonl([{"text": "a", "label": "pos"}]), labels=["neg", "pos"])
    assert result.dataset["label"] == [1]
    assert result.dataset.features["label"].names == ["neg", "pos"]


def test_json_array_and_data_wrapper(tmp_path):
    array = tmp_path / "a.json"
    array.write_text(json.dumps(ALPACA, indent=2))
    wrapped = tmp_path / "b.json"
    wrapped.write_text(json.dumps({"data": ALPACA}))
    assert len(load_data(array).dataset) == 2
    assert len(load_data(wrapped).dataset) == 2


def test_json_array_problems_carry_the_elements_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([ALPACA[0], {"instruction": "x"}], indent=2))
    with pytest.raises(UserInputError, match=rf"{path}:7: missing field 'output'"):
        load_data(path)


def test_broken_json_document_is_a_format_error_with_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n{"text": "a"},\n{"text": \n]')
    with pytest.raises(FormatError, match=rf"{path}:4: invalid JSON"):
        load_data(path)


def test_json_lines_under_a_json_name(tmp_path):
    path = tmp_path / "lines.json"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert load_data(path).dataset["text"] == ["a", "b"]


def test_csv_with_mapped_columns_and_multiline_cells(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\n"two\nlines",yes\nq2,\n')
    with pytest.raises(UserInputError, match=rf"{path}:4: empty field 'answer' \(mapped to 'output'\)"):
        load_data(path, columns="instruction=question,output=answer")
    result = load_data(path, columns="instruction=question,output=answer", on_error="skip")
    assert result.dataset[0]["messages"][0]["content"] == "two\nlines"


def test_csv_json_cells_hold_conversations(tmp_path):
    path = tmp_path / "chat.csv"
    messages = json.dumps(chat("user", "u", "assistant", "a")["messages"]).replace('"', '""')
    path.write_text(f'messages\n"{messages}"\n')
    assert load_data(path).dataset[0]["messages"][1]["content"] == "a"


def test_tsv_classification_pairs(tmp_path):
    path = tmp_path / "nli.tsv"
    path.write_text("text\ttext_pair\tlabel\nA man sleeps.\tA person rests.\tentail\nA cat.\tA dog.\tcontra\n")
    result = load_data(path)
    assert result.kind is Kind.CLASSIFICATION
    assert result.dataset[0]["text_pair"] == "A person rests."
    assert result.label_names == ["contra", "entail"]


def test_txt_is_one_record_per_non_blank_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first line\n\nsecond line\n")
    result = load_data(path)
    assert result.dataset["text"] == ["first line", "second line"]
    assert result.report.records_in == 2


def test_parquet_keeps_classlabel_names(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]}, features=features).to_parquet(str(tmp_path / "d.parquet"))
    result = load_data(tmp_path / "d.parquet")
    assert result.label_names == ["neg", "pos"]
    assert result.dataset["label"] == [1, 0]


def test_parquet_problems_name_the_row(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"text": ["ok", ""]}).to_parquet(str(tmp_path / "d.parquet"))
    with pytest.raises(UserInputError, match=r"d\.parquet:row 2: empty field 'text'"):
        load_data(tmp_path / "d.parquet")


def test_folder_and_glob_read_every_data_file(tmp_path, write_jsonl):
    write_jsonl([{"text": "a"}], "part-1.jsonl")
    write_jsonl([{"text": "b"}], "sub/part-2.jsonl")
    (tmp_path / "part-3.txt").write_text("c\n")
    assert sorted(load_data(tmp_path).dataset["text"]) == ["a", "b", "c"]
    assert load_data(str(tmp_path / "part-*.jsonl")).dataset["text"] == ["a"]
    with pytest.raises(NotFoundError, match="no files match"):
        load_data(str(tmp_path / "nothing-*.jsonl"))


def test_save_to_disk_folder_and_split_choice(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({
        "train": Dataset.from_dict({"text": ["t1", "t2"]}),
        "test": Dataset.from_dict({"text": ["x"]}),
    }).save_to_disk(str(tmp_path / "saved"))  # fmt: skip
    assert load_data(tmp_path / "saved").dataset["text"] == ["t1", "t2"]
    assert load_data(tmp_path / "saved", split="test").dataset["text"] == ["x"]
    with pytest.raises(UserInputError, match="has splits train, test"):
        load_data(tmp_path / "saved", split="validation")


def test_builtin_sets_load_with_their_kind():
    result = load_data("builtin:sentiment")
    assert result.kind is Kind.CLASSIFICATION
    assert result.label_names == ["negative", "positive"]
    with pytest.raises(NotFoundError, match="builtin:corpus"):
        load_data("builtin:nope")


def test_hub_name_offline_is_one_clear_error():
    # conftest sets HF_DATASETS_OFFLINE/HF_HUB_OFFLINE, so nothing is downloaded.
    with pytest.raises(NotFoundError, match="not a local file or folder"):
        load_data("someone/no-such-dataset")


def test_missing_file_is_not_found():
    with pytest.raises(NotFoundError, match="no such file or folder: missing.jsonl"):
        load_data("missing.jsonl")


def test_forced_kind_overrides_detection(write_jsonl):
    path = write_jsonl([{"text": "great", "label": "pos"}])
    assert load_data(path, kind="text").kind is Kind.TEXT


def test_forced_chat_accepts_any_chat_layout(write_jsonl):
    assert load_data(write_jsonl(ALPACA), kind="chat").format == "alpaca"
    with pytest.raises(UserInputError, match="missing field 'messages'"):
        load_data(write_jsonl([{"text": "not a chat"}], "t.jsonl"), kind="chat")


def test_empty_file_says_so(write_jsonl):
    with pytest.raises(UserInputError, match="holds no records"):
        load_data(write_jsonl([]))


def test_save_jsonl_round_trips_every_kind(tmp_path, write_jsonl):
    path = write_jsonl([{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg", "text_pair": "x"}])
    loaded = load_data(path)
    out = tmp_path / "out" / "c.jsonl"
    assert save_jsonl(loaded.dataset, out, loaded.kind, label_names=loaded.label_names) == 2
    assert [json.loads(line)["label"] for line in out.read_text().splitlines()] == ["pos", "neg"]
    again = load_data(out)
    assert again.dataset[:] == loaded.dataset[:]


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.json", "lines.json", "bom.txt", "bom.csv"])
def test_a_byte_order_mark_does_not_cost_the_first_record(tmp_path, name):
    """Windows editors start UTF-8 files with a BOM; every reader drops it, so all 3 records load."""
    texts = ["first record", "second", "third"]
    body = {
        "bom.jsonl": "".join(json.dumps({"text": t}) + "\n" for t in texts),
        "bom.json": json.dumps([{"text": t} for t in texts], indent=1),
        "lines.json": "".join(json.dumps({"text": t}) + "\n" for t in texts),
        "bom.txt": "".join(t + "\n" for t in texts),
        "bom.csv": "text\n" + "".join(t + "\n" for t in texts),
    }[name]
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    result = load_data(path, on_error="skip")
    assert (result.report.records_out, result.report.rejected) == (3, 0)
    assert result.dataset["text"] == texts


def test_a_mapping_onto_a_column_no_record_has_is_named(write_jsonl):
    """It used to be ignored when the data loaded anyway, or hidden behind "cannot detect the data kind"."""
    path = write_jsonl([{"text": "a document", "source": "web"}, {"text": "another"}])
    with pytest.raises(
        UserInputError,
        match=r"--columns: column 'body' \(mapped to 'text'\) not found: none of "
        r"the 2 records read from .* has it; its columns are \[source, text\]",
    ):
        load_data(path, columns="text=body")
    assert load_data(path, columns="text=text").report.records_out == 2
    qa = write_jsonl([{"question": "q", "answer": "a"}], name="qa.jsonl")
    with pytest.raises(UserInputError, match=r"column 'reply' \(mapped to 'output'\) not found: the first record"):
        load_data(qa, columns="instruction=question,output=reply")


def test_default_rejects_path_lies_beside_the_output_else_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        default_rejects_path("data/train.jsonl", beside=tmp_path / "out" / "clean.jsonl")
        == tmp_path / "out" / "clean.jsonl.rejects.jsonl"
    )
    assert default_rejects_path("/read/only/data.jsonl") == tmp_path / "data.rejects.jsonl"
    assert default_rejects_path("builtin:arith-sft") == tmp_path / "builtin_arith-sft.rejects.jsonl"
    assert default_rejects_path("some/folder/") == tmp_path / "folder.rejects.jsonl"
