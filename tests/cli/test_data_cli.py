import json

import pytest
from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()
ALPACA = [{"instruction": "Add 2 and 3", "input": "", "output": "5"}, {"instruction": "Say hi", "output": "hi"}]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tiny_tokenizer):
    """Only the tokenizer of a model folder: all `data stats/preview --tokenizer` reads."""
    path = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ALPACA) + "not json\n")
    return path


def invoke(*args):
    return runner.invoke(app, ["data", *map(str, args)])


def test_check_fails_with_file_and_line(alpaca_file):
    result = invoke("check", alpaca_file)
    assert result.exit_code == 2
    assert f"{alpaca_file}:3: invalid JSON" in result.output
    assert "Traceback" not in result.output


def test_check_skip_writes_rejects_and_reports_json(alpaca_file, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    result = invoke("check", alpaca_file, "--on-error", "skip", "--rejects", rejects, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["kind"] == "chat" and payload["format"] == "alpaca"
    assert payload["report"]["records_in"] == 3 and payload["report"]["rejected"] == 1
    assert payload["duplicates"]["exact_duplicates"] == 0
    assert json.loads(rejects.read_text())["location"] == f"{alpaca_file}:3"


def test_check_human_output_and_column_mapping(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nq1,a1\nq1,a1\n")
    result = invoke("check", path, "--columns", "instruction=question,output=answer")
    assert result.exit_code == 0, result.output
    assert "alpaca → chat" in result.output
    assert "1 exact" in result.output


def test_unknown_kind_is_a_one_line_error(alpaca_file):
    result = invoke("check", alpaca_file, "--kind", "tabular")
    assert result.exit_code == 2
    assert "Error: unknown data kind 'tabular'" in result.output


def test_stats_with_tokenizer_and_histogram(tokenizer_dir, tmp_path):
    data = tmp_path / "chat.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "count " * i}, {"role": "assistant", "content": "ok"}]}
        for i in range(1, 41)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = tmp_path / "h.png"
    result = invoke("stats", data, "--tokenizer", tokenizer_dir, "--max-len", 32, "--histogram", png, "--json")
    assert result.exit_code == 0, result.output
    tokens = json.loads(result.stdout)["stats"]["tokens"]
    assert tokens["max_len"] == 32 and 0 < tokens["over_max_len"] < 40
    assert tokens["tokens"]["p50"] <= tokens["tokens"]["p90"] <= tokens["tokens"]["p99"] <= tokens["tokens"]["max"]
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    human = invoke("stats", data, "--tokenizer", tokenizer_dir, "--max-len", 32)
    assert "would be truncated" in human.output and "p99" in human.output
    checked = json.loads(invoke("check", data, "--tokenizer", tokenizer_dir, "--max-len", 32, "--json").stdout)
    assert checked["over_max_len"] == tokens["over_max_len"]


def test_split_writes_deterministic_files(tmp_path):
    first = invoke("split", "builtin:sentiment", "--out", tmp_path / "a", "--seed", 7)
    second = invoke("split", "builtin:sentiment", "--out", tmp_path / "b", "--seed", 7, "--json")
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert (tmp_path / "a" / "test.jsonl").read_text() == (tmp_path / "b" / "test.jsonl").read_text()
    assert json.loads(second.stdout)["split"]["counts"] == {"train": 800, "validation": 100, "test": 100}
    assert "negative" in first.output


def test_convert_alpaca_to_messages_and_sharegpt(alpaca_file, tmp_path):
    out = tmp_path / "messages.jsonl"
    result = invoke("convert", alpaca_file, "--out", out, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text().splitlines()[0]) == {
        "messages": [{"role": "user", "content": "Add 2 and 3"}, {"role": "assistant", "content": "5"}]
    }
    rejected = (tmp_path / "messages.jsonl.rejects.jsonl").read_text().splitlines()  # skip mode leaves a rejects file
    assert [json.loads(line)["location"] for line in rejected] == [f"{alpaca_file}:3"]
    sharegpt = tmp_path / "sharegpt.jsonl"
    assert invoke("convert", out, "--out", sharegpt, "--to", "sharegpt").exit_code == 0
    assert json.loads(sharegpt.read_text().splitlines()[1])["conversations"][0] == {"from": "human", "value": "Say hi"}


def test_convert_to_another_kind_is_refused(tmp_path):
    result = invoke("convert", "builtin:arith-pref", "--out", tmp_path / "x.jsonl", "--to", "alpaca")
    assert result.exit_code == 2 and "cannot write preference data as alpaca" in result.output


def test_preview_shows_the_templated_text(tokenizer_dir):
    result = invoke("preview", "builtin:arith-sft", "--tokenizer", tokenizer_dir, "-n", 2)
    assert result.exit_code == 0, result.output
    assert result.output.count("<|im_start|>assistant") == 2
    payload = json.loads(invoke("preview", "builtin:arith-sft", "--tokenizer", tokenizer_dir, "-n", 1, "--json").stdout)
    runs = payload["records"][0]["parts"][0][1]
    assert [trained for _, trained in runs] == [False, True, False]
