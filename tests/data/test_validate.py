import json

import pytest

from lmforge.data.load import load_data
from lmforge.data.validate import ValidationReport, problem_summary
from lmforge.errors import UserInputError

from .conftest import chat

GOOD = chat("user", "u", "assistant", "a")


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "invalid JSON"),
        ('["a", "b"]', "not a JSON object"),
        (json.dumps({"other": 1}), "missing field 'messages'"),
        (json.dumps({"messages": []}), "empty field 'messages'"),
        (
            json.dumps({"messages": [{"role": "user", "content": 3}]}),
            "wrong type: content of 'messages' message 1 must be a string",
        ),
        (json.dumps(chat("user", "u", "user", "again", "assistant", "a")), "roles out of order"),
        (
            json.dumps(chat("user", "u", "assistant", "a", "user", "more")),
            "conversation does not end with the assistant",
        ),
    ],
)
def test_fail_names_file_line_and_reason(write_jsonl, bad_line, expected):
    path = write_jsonl([GOOD, GOOD, bad_line])
    with pytest.raises(UserInputError) as error:
        load_data(path, kind="messages")
    assert f"{path}:3: {expected}" in str(error.value)


def test_non_utf8_bytes_are_reported_with_their_line(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserInputError, match=rf"{path}:2: non-UTF-8 bytes"):
        load_data(path)


def test_non_utf8_in_csv_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text\nok\nbad \xff\n")
    with pytest.raises(UserInputError, match=rf"{path}:3: non-UTF-8 bytes"):
        load_data(path)


def test_label_outside_the_label_set(write_jsonl):
    path = write_jsonl([{"text": "a", "label": "pos"}, {"text": "b", "label": "meh"}])
    with pytest.raises(
        UserInputError, match=rf"{path}:2: label not in the label set: 'meh' is not one of \[neg, pos\]"
    ):
        load_data(path, labels=["neg", "pos"])


def test_fail_lists_only_the_first_twenty(write_jsonl):
    path = write_jsonl(["nope"] * 30)
    with pytest.raises(UserInputError) as error:
        load_data(path)
    message = str(error.value)
    assert "stopped at the first 20 bad records" in message
    assert f"{path}:20:" in message and f"{path}:21:" not in message


def test_skip_counts_add_up_and_rejects_file_holds_the_raw_records(tmp_path, write_jsonl):
    path = write_jsonl([GOOD, "{oops", {"messages": "x"}, GOOD, chat("assistant", "a")])
    rejects = tmp_path / "rejects" / "bad.jsonl"
    result = load_data(path, on_error="skip", rejects_path=rejects)
    report = result.report
    assert (report.records_in, report.records_out, report.rejected) == (5, 2, 3)
    assert report.records_in == report.records_out + report.rejected
    assert report.rejected_by_reason == {"invalid JSON": 1, "wrong type": 1, "roles out of order": 1}
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [line["location"] for line in lines] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert lines[0]["record"] == "{oops"
    assert lines[1]["record"] == {"messages": "x"}
    assert report.rejects_path == str(rejects)
    assert [p.name for p in rejects.parent.iterdir()] == ["bad.jsonl"]  # no temporary left behind
    assert "skipped 3 (1 invalid JSON, 1 wrong type, 1 roles out of order)" in problem_summary(report)


def test_skip_with_nothing_wrong_writes_an_empty_rejects_file(tmp_path, write_jsonl):
    rejects = tmp_path / "r.jsonl"
    result = load_data(write_jsonl([GOOD]), on_error="skip", rejects_path=rejects)
    assert result.report.rejected == 0 and rejects.read_text() == ""


def test_failed_load_leaves_no_rejects_file(tmp_path, write_jsonl):
    with pytest.raises(UserInputError):
        load_data(write_jsonl(["bad"]), on_error="fail", rejects_path=tmp_path / "r.jsonl")
    assert not (tmp_path / "r.jsonl").exists()


def test_unknown_policy_is_a_user_error(write_jsonl):
    with pytest.raises(UserInputError, match="--on-error must be 'fail' or 'skip'"):
        load_data(write_jsonl([GOOD]), on_error="ignore")  # type: ignore[arg-type]


def test_unbalanced_books_are_caught():
    with pytest.raises(AssertionError):
        ValidationReport(records_in=3, records_out=1, rejected=1).check_counts()


def test_non_utf8_in_txt_and_json_files(tmp_path):
    txt = tmp_path / "corpus.txt"
    txt.write_bytes(b"fine\n\xc3\x28 broken\n")
    with pytest.raises(UserInputError, match=rf"{txt}:2: non-UTF-8 bytes"):
        load_data(txt)
    document = tmp_path / "d.json"
    document.write_bytes(b'[\n{"text": "ok"},\n{"text": "\xff"}\n]')
    from lmforge.errors import FormatError

    with pytest.raises(FormatError, match=rf"{document}:3: non-UTF-8 bytes"):
        load_data(document)
