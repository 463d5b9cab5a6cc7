import json

from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


def test_generate_json_reproduces_with_a_seed(tiny_llama_dir):
    args = ["generate", str(tiny_llama_dir), "What is 2 plus 2?", "--max-new-tokens", "4", "--seed", "3", "--json"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    payload = json.loads(first.stdout)
    assert payload["completion_tokens"] == 4 and payload["params"]["seed"] == 3
    assert payload["params"]["temperature"] == 0.8  # balanced preset by default
    assert json.loads(second.stdout)["token_ids"] == payload["token_ids"]


def test_generate_streams_text_then_a_footer(tiny_llama_dir):
    result = runner.invoke(app, ["generate", str(tiny_llama_dir), "Hi", "--max-new-tokens", "3", "--greedy", "--raw"])
    assert result.exit_code == 0, result.output
    assert "3 tokens in" in result.stderr and "finish: length" in result.stderr


def test_explain_shows_each_stage_per_token(tiny_llama_dir):
    result = runner.invoke(
        app,
        [
            "generate",
            str(tiny_llama_dir),
            "Hi",
            "--max-new-tokens",
            "2",
            "--seed",
            "0",
            "--preset",
            "precise",
            "--explain",
            "--explain-top",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    for heading in ("step 0", "step 1", "p after T", "kept top-k", "kept top-p", "final p", "<-"):
        assert heading in result.stdout
    assert "top_k 20" in result.stdout  # the precise preset keeps 20 of the vocabulary


def test_invalid_sampling_values_are_one_error_line(tiny_llama_dir):
    result = runner.invoke(app, ["generate", str(tiny_llama_dir), "Hi", "--temperature", "-1", "--top-p", "1.5"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: temperature") and "top_p" in lines[0]


def test_missing_model_is_one_error_line(tmp_path):
    result = runner.invoke(app, ["generate", str(tmp_path / "nope"), "Hi"])
    assert result.exit_code == 2 and result.stderr.startswith("Error: model") and "Traceback" not in result.output


def test_chat_reads_turns_and_commands_from_stdin(tiny_llama_dir):
    result = runner.invoke(
        app,
        ["chat", str(tiny_llama_dir), "--max-new-tokens", "2", "--system", "Be brief."],
        input="hello\n/params\n/quit\n",
    )
    assert result.exit_code == 0, result.output
    assert "chatting with" in result.stdout and '"max_new_tokens": 2' in result.stdout


def test_system_prompt_counts_in_the_prompt_and_needs_the_template(tiny_llama_dir):
    base = ["generate", str(tiny_llama_dir), "Hi", "--max-new-tokens", "1", "--greedy", "--json"]
    plain = json.loads(runner.invoke(app, base).stdout)
    with_system = json.loads(runner.invoke(app, [*base, "--system", "Answer in one word."]).stdout)
    assert with_system["prompt_tokens"] > plain["prompt_tokens"]
    raw = runner.invoke(app, [*base, "--system", "x", "--raw"])
    assert raw.exit_code == 2 and "--system needs the chat template" in raw.stderr


def test_generate_with_device_map_gives_the_same_tokens(tiny_llama_dir):
    args = ["generate", str(tiny_llama_dir), "Hi", "--greedy", "--max-new-tokens", "5", "--json"]
    plain, placed = runner.invoke(app, args), runner.invoke(app, [*args, "--device-map", "auto"])
    assert placed.exit_code == 0, placed.output
    assert json.loads(placed.stdout)["token_ids"] == json.loads(plain.stdout)["token_ids"]


def test_readme_generate_command_runs_on_a_small_context_model(tiny_llama_64_dir):
    """`lmforge generate MODEL "Sort 3 1 2." --preset precise` without --max-new-tokens: capped, with a note."""
    result = runner.invoke(
        app, ["generate", str(tiny_llama_64_dir), "Sort 3 1 2.", "--preset", "precise", "--seed", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "note: max_new_tokens capped at" in result.stderr and "finish:" in result.stderr


def test_generate_from_a_gguf_file_and_with_quant_on_load(tmp_path, tiny_llama_dir):
    from lmforge.files.convert import convert_model

    convert_model(tiny_llama_dir, tmp_path / "m.gguf", quant="f32", progress=False)
    args = ["What is 2 plus 2?", "--max-new-tokens", "4", "--greedy", "--json"]
    from_folder = runner.invoke(app, ["generate", str(tiny_llama_dir), *args])
    from_gguf = runner.invoke(app, ["generate", str(tmp_path / "m.gguf"), *args])
    assert from_gguf.exit_code == 0, from_gguf.output
    # f32 GGUF: the same weights and tokenizer, read back by transformers' GGUF loader
    assert json.loads(from_gguf.stdout)["token_ids"] == json.loads(from_folder.stdout)["token_ids"]
    quantized = runner.invoke(app, ["generate", str(tiny_llama_dir), *args, "--quant", "nf4"])
    assert quantized.exit_code == 0, quantized.output
    assert json.loads(quantized.stdout)["completion_tokens"] == 4
    bad = runner.invoke(app, ["generate", str(tiny_llama_dir), *args, "--quant", "int2"])
    assert bad.exit_code == 2 and "not one of int8, int4, nf4" in bad.output
