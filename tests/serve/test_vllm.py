"""`--engine vllm`: the exact vLLM command line for every way a model is given, and one clear line for what vLLM cannot
take (vLLM is not installed here: the command is what is tested)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from lmforge.errors import DependencyError, UserInputError
from lmforge.serve.vllm import check_vllm, vllm_command

SERVER = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
NO_CORS = ["--allowed-origins", "[]"]


def _adapter(folder: Path, base: Path | str, rank: int, rank_pattern: dict | None = None) -> Path:
    """An adapter folder as peft writes it (only its config matters to the command line)."""
    folder.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": str(base),
        "r": rank,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
        "rank_pattern": rank_pattern or {},
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def _lora(name: str, path: Path) -> str:
    return json.dumps({"name": name, "path": str(path)})


def test_a_model_folder_with_every_forwarded_option(tiny_llama_dir):
    command = vllm_command(
        str(tiny_llama_dir),
        host="0.0.0.0",
        port=9000,
        api_keys=["k1", "k2"],
        cors_origins=["http://x"],
        served_model_name="m1",
        max_batch_size=32,
        tp=4,
        max_model_len=2048,
        dtype="bfloat16",
    )
    assert command == [
        *SERVER,
        "--model",
        str(tiny_llama_dir),
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--served-model-name",
        "m1",
        "--tensor-parallel-size",
        "4",
        "--max-model-len",
        "2048",
        "--dtype",
        "bfloat16",
        "--max-num-seqs",
        "32",
        "--api-key",
        "k1",
        "k2",
        "--allowed-origins",
        '["http://x"]',
    ]


def test_defaults_keep_vllms_own_and_name_the_model_as_lmforge_does(tiny_llama_dir):
    assert vllm_command(str(tiny_llama_dir)) == [
        *SERVER,
        "--model",
        str(tiny_llama_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--served-model-name",
        tiny_llama_dir.name,
        *NO_CORS,
    ]


def test_a_run_folder_serves_its_final_model(tiny_llama_dir, tmp_path):
    shutil.copytree(tiny_llama_dir, tmp_path / "run" / "final")
    assert vllm_command(str(tmp_path / "run"))[3:5] == ["--model", str(tmp_path / "run" / "final")]
    assert "run" in vllm_command(str(tmp_path / "run"))  # served under the run's name, as lmforge names it


def test_an_adapter_as_model_is_its_base_plus_a_lora_module(tiny_llama_dir, tmp_path):
    """It used to be handed to vLLM as if it were a model folder."""
    adapter = _adapter(tmp_path / "run" / "final", tiny_llama_dir, rank=24)
    assert vllm_command(str(tmp_path / "run"), served_model_name="sql") == [
        *SERVER,
        "--model",
        str(tiny_llama_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--served-model-name",
        tiny_llama_dir.name,
        *NO_CORS,
        "--enable-lora",
        "--max-lora-rank",
        "32",
        "--max-loras",
        "1",
        "--lora-modules",
        _lora("sql", adapter),
    ]


def test_adapters_beside_the_base_share_batches(tiny_llama_dir, tmp_path):
    small = _adapter(tmp_path / "a", tiny_llama_dir, rank=4)
    patterned = _adapter(tmp_path / "b", tiny_llama_dir, rank=8, rank_pattern={"q_proj": 64})
    command = vllm_command(
        str(tiny_llama_dir), adapters=[("sql", str(small)), ("chat", str(patterned))], served_model_name="base"
    )
    assert command == [
        *SERVER,
        "--model",
        str(tiny_llama_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--served-model-name",
        "base",
        *NO_CORS,
        "--enable-lora",
        "--max-lora-rank",
        "64",
        "--max-loras",
        "2",
        "--lora-modules",
        _lora("sql", small),
        _lora("chat", patterned),
    ]


def test_a_hub_id_is_fetched_and_scanned_by_lmforge_then_served_from_the_cache(tiny_llama_dir, tmp_path, monkeypatch):
    """vLLM reads the snapshot lmforge downloaded and checked (lmforge.hub), served under the hub id."""
    import lmforge.hub.reference
    from lmforge.hub.download import Snapshot

    fetched = []

    def fetch_snapshot(repo_id, revision=None, **_):
        fetched.append((repo_id, revision))
        return Snapshot(repo_id, revision or "main", "0" * 40, tiny_llama_dir, [], [], False)

    monkeypatch.setattr(lmforge.hub.reference, "fetch_snapshot", fetch_snapshot)
    adapter = _adapter(tmp_path / "a", "org/tiny", rank=16)
    assert vllm_command("org/tiny@v1", adapters=[("x", str(adapter))], trust_remote_code=True) == [
        *SERVER,
        "--model",
        str(tiny_llama_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--served-model-name",
        "org/tiny@v1",
        *NO_CORS,
        "--enable-lora",
        "--max-lora-rank",
        "16",
        "--max-loras",
        "1",
        "--lora-modules",
        _lora("x", adapter),
        "--trust-remote-code",
    ]
    assert fetched == [("org/tiny", "v1")]


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ({"max_queue": 10}, "--max-queue: vLLM's server has no queue limit"),
        ({"request_timeout_s": 30.0}, "--timeout: vLLM's server has no per-request time limit"),
        ({"device": "cuda:1"}, "--device: vLLM picks its GPUs itself"),
        ({"threads": 2}, "--threads sets torch's CPU threads"),
        ({"device_map": "auto"}, "--device-map: vLLM spreads a model over GPUs by tensor parallelism; use --tp"),
        ({"merge_adapters": True}, "lmforge convert ADAPTER DIR --to merged"),
        ({"max_body_bytes": 1000}, "--max-body-bytes"),
        ({"max_prompt_chars": 1000}, "--max-prompt-chars"),
        ({"quant": "nf4"}, "--quant quantizes with bitsandbytes while the transformers engine loads"),
        ({"dtype": "int8"}, "--dtype 'int8': choose one of float32, bfloat16, float16"),
        ({"tp": 0}, "--tp must be >= 1"),
        ({"api_keys": [""]}, "an API key is empty"),
    ],
)
def test_what_vllm_cannot_take_is_refused_in_one_line(tiny_llama_dir, option, words):
    with pytest.raises(UserInputError, match="^--engine vllm: ") as error:
        vllm_command(str(tiny_llama_dir), **option)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_every_refusal_is_reported_at_once(tiny_llama_dir):
    with pytest.raises(UserInputError) as error:
        vllm_command(str(tiny_llama_dir), max_queue=1, request_timeout_s=1.0, threads=1)
    assert all(flag in str(error.value) for flag in ("--max-queue", "--timeout", "--threads"))


def test_adapters_vllm_cannot_serve_are_refused(tiny_llama_dir, tmp_path):
    huge = _adapter(tmp_path / "huge", tiny_llama_dir, rank=1024)
    with pytest.raises(UserInputError, match="rank 1024"):
        vllm_command(str(tiny_llama_dir), adapters=[("h", str(huge))])
    grown = _adapter(tmp_path / "grown", tiny_llama_dir, rank=8)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.add_tokens(["<sql>"])
    tokenizer.save_pretrained(grown)
    with pytest.raises(UserInputError, match="adds tokens"):
        vllm_command(str(tiny_llama_dir), adapters=[("g", str(grown))])


def test_the_cli_forwards_only_what_was_given(tiny_llama_dir, monkeypatch):
    from typer.testing import CliRunner

    import lmforge.serve.vllm
    from lmforge.cli.main import app

    calls = []
    monkeypatch.setattr(lmforge.serve.vllm, "check_vllm", lambda: None)
    monkeypatch.setattr(lmforge.serve.vllm.subprocess, "call", lambda command: calls.append(command) or 0)
    result = CliRunner().invoke(
        app, ["serve", str(tiny_llama_dir), "--engine", "vllm", "--tp", "2", "--max-model-len", "128"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [
        [
            *SERVER,
            "--model",
            str(tiny_llama_dir),
            "--host",
            "127.0.0.1",
            "--port",
            "8000",
            "--served-model-name",
            tiny_llama_dir.name,
            "--tensor-parallel-size",
            "2",
            "--max-model-len",
            "128",
            *NO_CORS,
        ]
    ]
    refused = CliRunner().invoke(app, ["serve", str(tiny_llama_dir), "--engine", "vllm", "--max-queue", "5"])
    assert refused.exit_code == 2 and "--max-queue: vLLM's server has no queue limit" in refused.stderr


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_is_one_actionable_line():
    with pytest.raises(DependencyError, match="pip install vllm"):
        check_vllm()
