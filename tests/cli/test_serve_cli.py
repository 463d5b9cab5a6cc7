"""`lmforge serve` and `lmforge bench serve` through the CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def lora_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with non-zero weights on the tiny Llama, so it really changes the logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    )
    path = tmp_path_factory.mktemp("lora")
    model.save_pretrained(path)
    return path


def test_serve_wires_adapters_names_and_keys(tiny_llama_dir, lora_dir, monkeypatch):
    import torch
    from fastapi.testclient import TestClient

    import lmforge.serve.launch

    started = {}
    monkeypatch.setattr(lmforge.serve.launch, "run_uvicorn", lambda app, **kwargs: started.update(app=app, **kwargs))
    from lmforge.serve.bench import free_port

    port = str(free_port())
    threads = torch.get_num_threads()
    try:
        result = runner.invoke(
            app,
            [
                "serve",
                str(tiny_llama_dir),
                "--adapter",
                f"mine={lora_dir}",
                "--port",
                port,
                "--served-model-name",
                "base",
                "--api-key",
                "k1",
                "--api-key",
                "k2",
                "--threads",
                "1",
            ],
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert started["port"] == int(port) and started["host"] == "127.0.0.1"
    with TestClient(started["app"]) as http:
        assert http.get("/v1/models").status_code == 401
        headers = {"Authorization": "Bearer k2"}
        assert [m["id"] for m in http.get("/v1/models", headers=headers).json()["data"]] == ["base", "mine"]

        def first_logprob(model: str) -> float:
            reply = http.post(
                "/v1/completions",
                headers=headers,
                json={"model": model, "prompt": "hello", "max_tokens": 1, "temperature": 0, "logprobs": 0},
            ).json()
            return reply["choices"][0]["logprobs"]["token_logprobs"][0]

        assert first_logprob("base") != pytest.approx(first_logprob("mine"))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--engine", "vllm"], "--engine vllm needs"),
        (["--adapter", "no-equals-sign"], "write NAME=DIR"),
        (["--engine", "tgi"], "choose transformers or vllm"),
        (["--timeout", "0"], "--timeout must be > 0"),
        (["--max-queue", "0"], "must be >= 1"),
        (["--max-body-bytes", "0"], "--max-body-bytes and --max-prompt-chars must be >= 1"),
        (["--api-key", ""], "an API key is empty"),
        (["--tp", "2"], "--tp (tensor parallelism) needs --engine vllm"),
        (["--max-model-len", "9999"], "--max-model-len 9999 exceeds"),
        (["--api-key", "k", "--api-key", " "], "an API key is empty"),
    ],
)
def test_serve_errors_are_one_line(tiny_llama_dir, args, words):
    result = runner.invoke(app, ["serve", str(tiny_llama_dir), *args])
    assert result.exit_code == 2
    assert words in result.stderr and "Traceback" not in result.output


def test_max_model_len_serves_a_shorter_context(tiny_llama_dir, monkeypatch):
    from fastapi.testclient import TestClient

    import lmforge.serve.launch

    started = {}
    monkeypatch.setattr(lmforge.serve.launch, "run_uvicorn", lambda app, **kwargs: started.update(app=app))
    result = runner.invoke(app, ["serve", str(tiny_llama_dir), "--max-model-len", "64", "--port", "0"])
    assert result.exit_code == 0, result.output
    with TestClient(started["app"]) as http:
        assert http.get("/v1/models").json()["data"][0]["max_model_len"] == 64
        reply = http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 100})
    assert reply.status_code == 400 and "context length of 64" in reply.json()["error"]["message"]


def test_serving_an_encoder_folder_offers_embeddings(minilm_dir, monkeypatch):
    from fastapi.testclient import TestClient

    import lmforge.serve.launch

    started = {}
    monkeypatch.setattr(lmforge.serve.launch, "run_uvicorn", lambda app, **kwargs: started.update(app=app))
    result = runner.invoke(app, ["serve", str(minilm_dir), "--served-model-name", "minilm", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert "Serving minilm" in result.stderr
    with TestClient(started["app"]) as http:
        reply = http.post("/v1/embeddings", json={"input": ["one", "two"]}).json()
    assert [len(item["embedding"]) for item in reply["data"]] == [384, 384] and reply["model"] == "minilm"
    adapter = runner.invoke(app, ["serve", str(minilm_dir), "--adapter", "x=/nowhere", "--port", "0"])
    assert adapter.exit_code == 2 and "embedding model" in adapter.stderr


def test_an_empty_api_key_variable_is_refused_not_ignored(tiny_llama_dir, monkeypatch):
    """click ignores an empty LMFORGE_API_KEY, which once started a server without keys, silently."""
    import lmforge.serve.launch

    monkeypatch.setattr(lmforge.serve.launch, "run_uvicorn", lambda *args, **kwargs: pytest.fail("server started"))
    monkeypatch.setenv("LMFORGE_API_KEY", "")
    result = runner.invoke(app, ["serve", str(tiny_llama_dir)])
    assert result.exit_code == 2 and "an API key is empty" in result.stderr


def test_bench_serve_against_a_running_server(tiny_llama_dir):
    from lmforge.generate.load import load_model
    from lmforge.serve.app import create_app
    from lmforge.serve.engine import Engine
    from tests.serve.conftest import run_server

    engine = Engine({"tiny": load_model(str(tiny_llama_dir))})
    with run_server(create_app(engine, api_keys=["k"])) as (url, _):
        result = runner.invoke(
            app,
            [
                "bench",
                "serve",
                "--url",
                url,
                "--api-key",
                "k",
                "--concurrency",
                "1,3",
                "--requests",
                "3",
                "--max-tokens",
                "5",
                "--json",
            ],
        )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [level["concurrency"] for level in data["levels"]] == [1, 3]
    for level in data["levels"]:
        assert level["errors"] == 0 and level["requests"] == 3 and level["output_tokens"] == 15
        assert 0 < level["ttft_p50_seconds"] <= level["ttft_p99_seconds"]
    assert data["baseline"] is None  # no local MODEL given, so no one-at-a-time baseline


def test_bench_serve_needs_a_model_or_url():
    result = runner.invoke(app, ["bench", "serve"])
    assert result.exit_code == 2 and "give a MODEL folder" in result.stderr


def test_serve_with_a_busy_port_fails_fast(tiny_llama_dir):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", str(tiny_llama_dir), "--port", str(port)])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "another --port" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "--port must be 0-65535 (got 70000)"),
        (["--timeout", "inf"], "--timeout must be > 0 seconds and finite (got inf)"),
        (["--timeout", "nan"], "--timeout must be > 0 seconds and finite (got nan)"),
    ],
)
def test_serve_refuses_a_port_or_timeout_it_cannot_use_in_one_line(tiny_llama_dir, args, message):
    result = runner.invoke(app, ["serve", str(tiny_llama_dir), *args])
    assert result.exit_code == 2 and result.stderr.strip() == f"Error: {message}", result.output
