"""Every command from a hub id on the local hub, then again with HF_HUB_OFFLINE=1 from the cache (asking the hub
nothing); every command refuses the repo whose pickle carries a live payload before anything loads it; and the
hub's refusals are one line each."""

import json
import socket
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from lmforge.cli.main import app

from .conftest import TOKEN

runner = CliRunner()


def cli(*args: Any, input: str | None = None) -> Any:
    return runner.invoke(app, [str(arg) for arg in args], input=input)


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return result


def online_then_offline(hub: Any, go_offline: Any, check: Any) -> None:
    """`check` passes with the hub, then again offline from the cache without a single request to the hub."""
    check()
    asked = len(hub.requests)
    go_offline()
    check()
    assert len(hub.requests) == asked, hub.requests[asked:]


def _chat_file(folder: Path) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {n} plus 1?"},
                {"role": "assistant", "content": str(n + 1)},
            ]
        }
        for n in range(2)
    ]
    path = folder / "chat.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_download_prints_where_what_and_the_verdict(online, go_offline) -> None:
    shown = ok(cli("download", "org/tiny-both")).stdout
    assert "model.safetensors" in shown and "safetensors" in shown and "scan: safe" in shown
    assert (
        "left on the hub (not needed to load it): original/consolidated.00.pth, pytorch_model.bin, "
        "training_args.bin" in shown
    )

    def check() -> None:
        report = json.loads(ok(cli("download", "org/tiny", "--json")).stdout)
        assert report["verdict"] == "safe" and report["exit_code"] == 0
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {item["name"] for item in report["files"]}
        assert Path(report["folder"]) == online.cache / "models--org--tiny" / "snapshots" / report["commit"]

    online_then_offline(online, go_offline, check)


def test_plan_fetches_config_json_alone(online, go_offline, monkeypatch, tmp_path, tiny_llama_dir) -> None:
    from lmforge.files.inspect import inspect_path

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # a fresh cache: what plan fetched is all it holds
    start = len(online.requests)

    def check() -> None:
        plan = json.loads(ok(cli("plan", "org/tiny-both", "--json")).stdout)
        assert (plan["model"]["hf_id"], plan["model"]["params_total"]) == (
            "org/tiny-both",
            inspect_path(tiny_llama_dir).total_params,
        )

    online_then_offline(online, go_offline, check)
    fetched = [path for method, path, _ in online.requests[start:] if method == "GET" and "/resolve/" in path]
    assert [path.rsplit("/", 1)[1] for path in fetched] == ["config.json"]
    assert [path.name for path in tmp_path.glob("models--org--tiny-both/snapshots/*/*")] == ["config.json"]


def test_inspect_reads_each_revision_from_the_cache(online, go_offline, tiny_llama_dir) -> None:
    from lmforge.files.inspect import inspect_path

    local = inspect_path(tiny_llama_dir)

    def check() -> None:
        main = json.loads(ok(cli("inspect", "org/tiny", "--json")).stdout)
        v1 = json.loads(ok(cli("inspect", "org/tiny@v1", "--json")).stdout)
        assert (main["total_params"], main["architecture"], main["scan"]["verdict"]) == (
            local.total_params,
            "LlamaForCausalLM",
            local.scan.verdict,
        )
        assert (main["config"]["num_layers"], v1["config"]["num_layers"]) == (2, 1)
        assert v1["total_params"] < main["total_params"] and main["path"].startswith(str(online.cache))

    online_then_offline(online, go_offline, check)


def test_train_a_lora_from_a_hub_id_then_generate_from_the_run(online, go_offline, tmp_path) -> None:
    def check() -> None:
        out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        config = tmp_path / f"{out.name}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "stage": "sft",
                    "out": str(out),
                    "model": {"path": "org/tiny"},
                    "method": {"name": "lora", "lora_r": 4},
                    "data": {"train": "builtin:arith-sft", "max_examples": 4, "max_len": 48, "eval_fraction": 0},
                    "train": {"max_steps": 2, "micro_batch_size": 4},
                }
            )
        )
        result = ok(cli("train", config, "--json"))
        assert json.loads(result.stdout[result.stdout.index("{") :])["steps"] == 2
        base = json.loads((out / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert Path(base).parent == online.cache / "models--org--tiny" / "snapshots"  # the exact commit
        reply = json.loads(
            ok(cli("generate", out, "What is 2 plus 2?", "--max-new-tokens", "3", "--greedy", "--json")).stdout
        )
        assert reply["model"] == f"org/tiny+{out.name}" and reply["completion_tokens"] <= 3

    online_then_offline(online, go_offline, check)


def test_generate_and_eval_from_a_hub_id(online, go_offline, tmp_path) -> None:
    data = _chat_file(tmp_path)

    def check() -> None:
        reply = json.loads(
            ok(cli("generate", "org/tiny", "What is 2 plus 2?", "--max-new-tokens", "3", "--greedy", "--json")).stdout
        )
        assert reply["model"] == "org/tiny" and reply["completion_tokens"] == 3
        report = json.loads(
            ok(
                cli("eval", "org/tiny", "--data", data, "--max-new-tokens", "3", "--out", tmp_path / "eval", "--json")
            ).stdout
        )
        assert report["model"] == "org/tiny" and report["summary"]["examples"] == 2

    online_then_offline(online, go_offline, check)


def test_serve_a_hub_id_to_the_openai_client(online, go_offline, monkeypatch) -> None:
    from openai import OpenAI

    import lmforge.serve.launch
    from lmforge.serve.bench import free_port
    from tests.serve.conftest import run_server

    replies = []

    def run_uvicorn(app: Any, **_: Any) -> None:  # the real server, in a thread, for one chat request
        with run_server(app) as (url, _server):
            client = OpenAI(base_url=f"{url}/v1", api_key="unused")
            replies.append(
                client.chat.completions.create(
                    model="org/tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0
                )
            )

    monkeypatch.setattr(lmforge.serve.launch, "run_uvicorn", run_uvicorn)

    def check() -> None:
        ok(cli("serve", "org/tiny", "--port", free_port()))
        reply = replies.pop()
        assert reply.model == "org/tiny" and reply.choices[0].message.role == "assistant"
        assert 1 <= reply.usage.completion_tokens <= 3

    online_then_offline(online, go_offline, check)


def test_serve_an_encoder_hub_id_on_v1_embeddings(online, go_offline, monkeypatch, minilm_dir) -> None:
    """A sentence-transformers repo given as a hub id is served on /v1/embeddings with the pooling its modules
    declare (1_Pooling/config.json is fetched beside the root files): the vectors sentence-transformers gives."""
    import numpy as np
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer

    import lmforge.serve.launch
    from lmforge.serve.bench import free_port
    from tests.serve.conftest import run_server

    from .conftest import _folder_files

    online.add("org/minilm", _folder_files(minilm_dir))
    texts = ["The quick brown fox.", "hello"]
    expected = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts)
    replies = []

    def run_uvicorn(app: Any, **_: Any) -> None:
        with run_server(app) as (url, _server):
            replies.append(OpenAI(base_url=f"{url}/v1", api_key="unused").embeddings.create(model="m", input=texts))

    monkeypatch.setattr(lmforge.serve.launch, "run_uvicorn", run_uvicorn)

    def check() -> None:
        ok(cli("serve", "org/minilm", "--port", free_port(), "--served-model-name", "m"))
        got = np.array([item.embedding for item in replies.pop().data])
        assert got.shape == (2, 384) and np.abs(got - expected).max() < 1e-5

    online_then_offline(online, go_offline, check)
    assert "1_Pooling/config.json" in online.fetched("org/minilm")


def test_every_command_refuses_the_pickle_payload_before_loading_it(online, tmp_path) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "stage": "sft",
                "out": str(tmp_path / "run"),
                "model": {"path": "org/evil"},
                "method": {"name": "lora"},
                "train": {"max_steps": 1},
            }
        )
    )
    data = _chat_file(tmp_path)
    refused = {
        "download": cli("download", "org/evil"),
        "scan": cli("scan", "org/evil"),
        "train": cli("train", config),
        "generate": cli("generate", "org/evil", "hi"),
        "chat": cli("chat", "org/evil", input="hi\n"),
        "eval": cli("eval", "org/evil", "--data", data, "--out", tmp_path / "eval"),
        "serve": cli("serve", "org/evil", "--port", 1),
        "convert": cli("convert", "org/evil", tmp_path / "out.safetensors"),
    }
    for command, result in refused.items():
        assert result.exit_code == 1, (command, result.output)
        assert "pytorch_model.bin" in result.output and "os.makedirs" in result.output, (command, result.output)
    for command in ("train", "generate", "chat", "eval", "serve"):
        assert "--trust-pickle" in refused[command].stderr, command
    assert not (tmp_path / "run").exists() and not (tmp_path / "out.safetensors").exists()
    inspected = json.loads(ok(cli("inspect", "org/evil", "--json")).stdout)  # reads headers, never unpickles
    assert inspected["scan"]["verdict"] == "unsafe" and not any(r["can_load"] for r in inspected["runtimes"])
    assert json.loads(ok(cli("plan", "org/evil", "--json")).stdout)["model"]["hf_id"] == "org/evil"  # config only


def test_the_hubs_refusals_are_one_line_each(online, monkeypatch) -> None:
    def error_line(result: Any, code: int) -> str:
        assert result.exit_code == code, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        return lines[0]

    assert "org/gated is gated on the hub" in error_line(cli("download", "org/gated"), 2)
    ok(cli("download", "org/gated", "--token", TOKEN))
    assert "has no model of that name" in error_line(cli("generate", "org/nope", "hi"), 2)
    assert "org/tiny has no revision 'v9'" in error_line(cli("inspect", "org/tiny@v9"), 2)
    assert "needs its own Python code to load (configuration_evil.py, modeling_evil.py)" in error_line(
        cli("generate", "org/remote-code", "hi"), 2
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{probe.getsockname()[1]}")
    assert "cannot be reached" in error_line(cli("serve", "org/never-fetched", "--port", 1), 2)
