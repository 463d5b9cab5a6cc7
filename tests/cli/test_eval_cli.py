import csv
import json

from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


def test_eval_compare_writes_the_report(tiny_llama_dir, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"instruction": "Say 5.", "output": "5"}) + "\n")
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "eval",
            str(tiny_llama_dir),
            "--data",
            str(data),
            "--compare",
            str(tiny_llama_dir),
            "--max-new-tokens",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rougeL" in result.stdout and "0 wins, 0 losses, 1 ties" in result.stdout
    assert (out / "report.md").is_file() and len((out / "results.jsonl").read_text().splitlines()) == 1


def test_eval_json_for_perplexity_on_plain_text(tiny_llama_dir, tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("The quick brown fox jumps over the lazy dog.\n" + "word " * 300 + "\nA third line.\n")
    result = runner.invoke(
        app,
        ["eval", str(tiny_llama_dir), "--data", str(data), "--limit", "2", "--out", str(tmp_path / "ppl"), "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["task"] == "perplexity" and payload["summary"]["examples"] == 2
    assert payload["summary"]["perplexity"] > 1
    assert payload["summary"]["truncated"] == 1  # the 300-word line is cut at the 256-token context


def test_stress_suite_exports_a_rubric_sheet(tiny_llama_dir, tmp_path):
    result = runner.invoke(
        app,
        ["eval", str(tiny_llama_dir), "--suite", "stress", "--max-new-tokens", "1", "--out", str(tmp_path / "stress")],
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "stress" / "rubric.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header[5:11] == ["relevance", "correctness", "completeness", "fluency", "safety", "creativity"]


def test_data_or_suite_is_required_and_errors_are_one_line(tiny_llama_dir):
    result = runner.invoke(app, ["eval", str(tiny_llama_dir)])
    assert result.exit_code == 2 and result.stderr.strip() == "Error: give exactly one of --data DATA or --suite stress"
    bad = runner.invoke(app, ["eval", str(tiny_llama_dir), "--suite", "vibes"])
    assert bad.exit_code == 2 and "no suite 'vibes'" in bad.stderr


def test_mistakes_out_writes_preference_pairs(tiny_llama_dir, tmp_path):
    data = tmp_path / "qa.jsonl"
    qa = [("What is 12 plus 30?", "42"), ("Reverse the string abc.", "cba")]  # the untrained model answers one
    data.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in qa))
    pairs = tmp_path / "pairs.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            str(tiny_llama_dir),
            "--data",
            str(data),
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "report"),
            "--mistakes-out",
            str(pairs),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    mistakes = json.loads(result.stdout)["mistakes"]
    assert mistakes["mistakes"] == 2 and mistakes["pairs"] + mistakes["empty"] == 2 and mistakes["pairs"] >= 1
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(rows) == mistakes["pairs"] and all(row["chosen"][0]["content"] in ("42", "cba") for row in rows)
    assert all(row["rejected"][0]["content"] not in ("", row["chosen"][0]["content"]) for row in rows)


def test_mistakes_out_needs_a_generation_evaluation(tiny_llama_dir, tmp_path):
    result = runner.invoke(
        app, ["eval", str(tiny_llama_dir), "--suite", "stress", "--mistakes-out", str(tmp_path / "p.jsonl")]
    )
    assert result.exit_code != 0 and "--mistakes-out needs a generation evaluation" in result.stderr
    assert not (tmp_path / "p.jsonl").exists()


def test_eval_reads_data_with_the_options_its_errors_name(tiny_llama_dir, tmp_path):
    """The undetectable-columns error says --kind/--columns, so eval has them (and --on-error)."""
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "Say 5.", "answer": "5"}) + "\n" + "{broken\n")
    base = ["eval", str(tiny_llama_dir), "--data", str(data), "--max-new-tokens", "2", "--out", str(tmp_path / "r")]
    undetected = runner.invoke(app, base)
    assert undetected.exit_code == 2 and "name it with --kind" in undetected.stderr
    mapped = runner.invoke(app, [*base, "--columns", "instruction=question,output=answer"])
    assert mapped.exit_code == 2 and "pass --on-error skip" in mapped.stderr
    skipped = runner.invoke(app, [*base, "--columns", "instruction=question,output=answer", "--on-error", "skip"])
    assert skipped.exit_code == 0, skipped.output
    assert len((tmp_path / "r" / "rejects.jsonl").read_text().splitlines()) == 1
    assert "note: BLEU means nothing here" in skipped.stdout  # a 1-token reference
    assert "BLEU means nothing here" in (tmp_path / "r" / "report.md").read_text()


def test_quant_on_load_measures_what_nf4_costs_against_the_float_model(tiny_llama_dir, tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("The quick brown fox jumps over the lazy dog.\nWhat is 12 plus 30? The answer is 42.\n")
    result = runner.invoke(
        app,
        [
            "eval",
            str(tiny_llama_dir),
            "--data",
            str(data),
            "--quant",
            "nf4",
            "--compare",
            str(tiny_llama_dir),
            "--out",
            str(tmp_path / "q"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    quantized, original = payload["summary"]["perplexity"], payload["compare_summary"]["perplexity"]
    assert quantized != original and abs(quantized - original) < 0.2 * original  # nf4 moves it, a little
    suite = runner.invoke(app, ["eval", str(tiny_llama_dir), "--suite", "stress", "--quant", "nf4"])
    assert suite.exit_code == 2 and "--quant applies to --data" in suite.output


def test_eval_refuses_an_unknown_on_error_before_it_evaluates(tiny_llama_dir, tmp_path):
    """--on-error was only checked when a data file was read: with builtin data a typo ran the evaluation."""
    out = tmp_path / "r"
    args = ["eval", str(tiny_llama_dir), "--data", "builtin:arith-sft", "--limit", "1", "--max-new-tokens", "1"]
    result = runner.invoke(app, [*args, "--on-error", "skp", "--out", str(out)])
    assert result.exit_code == 2 and "--on-error must be 'fail' or 'skip', not 'skp'" in result.stderr
    assert not out.exists()
