from pathlib import Path

from typer.testing import CliRunner

from lmforge.cli.main import app


def test_version_prints():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("lmforge ")


def test_tiny_llama_loads_back(tiny_llama_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert model.config.num_hidden_layers == 2
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_minilm_is_shipped(minilm_dir: Path):
    assert (minilm_dir / "config.json").exists()
