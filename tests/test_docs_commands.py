"""Every `lmforge` command in README.md and docs/*.md is run as written, or listed in SKIPPED with the reason.

The commands are read from the ```bash blocks (a trailing backslash joins lines, `;` separates commands,
`# ...` is a comment) and run through the CLI in a folder laid out as a user following the docs would
have it: a quickstart-like run (runs/quickstart/pretrain, and an SFT LoRA run of it in runs/quickstart/sft
and runs/sft), its sft.yaml, and the files the examples name (train.jsonl, data.csv, model.bin, ./model,
MODEL_DIR, ...). Each command gets a fresh copy of that folder, so none depends on another's leftovers.
The model has the quickstart's 256-token context, so what fits a context is exercised as a quickstart user
meets it; its generation config ends a reply at any token, so every generating command (eval's 150
problems included) costs a step per batch on a CPU: these tests run the commands, not the model.
"""

from __future__ import annotations

import gzip
import json
import pickle
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lmforge.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_SYNOPSIS = "a synopsis with placeholders ([--option VALUE]), not a command"
_SERVER = "starts a server that runs until it is stopped; tests/serve/ drive the same app and `serve` CLI"
_UI = (
    "starts the web UI's server, which runs until it is stopped; tests/ui/test_browser.py serves the same app "
    "and drives every tab in Chromium, tests/cli/test_ui_cli.py the command's options and refusals"
)
_STAGES = (
    "10 steps of each example config in turn (2-3 min on CPU, each needing the previous run); "
    "tests/train/test_stages.py trains every stage and example config"
)
SKIPPED: dict[str, str] = {
    "lmforge plan qwen2.5-7b --method lora --simulate": "one training step of a 7B model on fake tensors "
    "(~10 s of CPU); tests/plan/test_simulate.py runs the simulation",
    "lmforge plan qwen2.5-0.5b --simulate --plot breakdown.png": "one fake-tensor training step (~9 s of CPU); "
    "tests/plan/test_simulate.py and tests/cli/test_plan_cli.py cover --simulate and --plot",
    "lmforge train examples/pretrain.yaml --set train.max_steps=200": "200 training steps (minutes on CPU); "
    "tests/train/test_stages.py parses and trains every example config",
    "lmforge train examples/sft-lora.yaml --set train.max_steps=50": "50 LoRA steps on runs/pretrain (minutes on "
    "CPU); tests/train/test_stages.py parses and trains every example config",
    "lmforge train sft.yaml --nproc 2": "two training processes through accelerate; "
    "tests/train/test_launch.py runs a 2-process CPU DDP launch",
    "lmforge train sft.yaml --set train.max_steps=200 --set method.name=lora": "200 training steps (minutes on CPU)",
    "lmforge train sft.yaml --nproc 4": "four training processes; tests/train/test_launch.py runs a 2-process launch",
    "lmforge train cfg.yaml --nproc 16 --deepspeed zero3": "16 GPUs with DeepSpeed ZeRO-3; needs GPUs and deepspeed",
    "lmforge train examples/pretrain.yaml --set out=$R/pretrain $S": _STAGES,
    "lmforge train examples/sft-lora.yaml --set model.path=$R/pretrain $S": _STAGES,
    "lmforge train examples/rm.yaml --set model.path=$R/sft $S": _STAGES,
    "lmforge train examples/dpo.yaml --set model.path=$R/sft $S": _STAGES,
    "lmforge train examples/rlhf.yaml --set model.path=$R/sft --set rlhf.reward_model=$R/rm "
    "--set train.micro_batch_size=4 $S": _STAGES,
    "lmforge train examples/distill.yaml --set model.tokenizer=$R/sft/final --set distill.teacher=$R/sft $S": _STAGES,
    "lmforge serve runs/quickstart/sft --port 8000 --api-key sk-local": _SERVER,
    "lmforge serve runs/quickstart/pretrain --adapter sft=runs/quickstart/sft": _SERVER,
    "lmforge serve runs/sft-tiny --port 8000 --api-key sk-local --adapter sql=runs/lora-sql "
    "--adapter support=runs/lora-support": _SERVER,
    "lmforge ui": _UI,
    "lmforge ui --runs /data/runs --allow /data/datasets --allow /models --port 8080": _UI,
    "lmforge ui --host 0.0.0.0 --auth admin:s3cret": _UI,
    "lmforge bench serve runs/quickstart/sft": "starts a server and sweeps concurrency 1-64 (minutes on CPU); "
    "tests/serve/test_bench_bound.py and benchmarks/serve_bench.py",
    "lmforge bench serve MODEL [--concurrency 1,4,16,64] [--max-tokens 32] [--threads 1] [--json]": _SYNOPSIS,
    "lmforge bench serve --url http://127.0.0.1:8000 [--api-key K]": _SYNOPSIS,
    "lmforge data check DATA [--kind K] [--columns a=b,...] [--labels x,y] [--on-error fail|skip] [--rejects FILE] "
    "[--dedup] [--tokenizer DIR --max-len N] [--json]": _SYNOPSIS,
    "lmforge data stats DATA [--tokenizer DIR] [--max-len N] [--template NAME] [--histogram lengths.png] [--json]": _SYNOPSIS,
    "lmforge data split DATA --out DIR [--ratios 8,1,1] [--seed N] [--to LAYOUT] [--save-to-disk] [--dedup] [--json]": _SYNOPSIS,
    "lmforge data convert DATA --out FILE.jsonl [--to canonical|messages|sharegpt|alpaca] [--json]": _SYNOPSIS,
    "lmforge data preview DATA --tokenizer DIR [-n 3] [--max-len N] [--template NAME] [--train-on-prompt] [--json]": _SYNOPSIS,
    "lmforge quickstart --out runs/qs": "the full quickstart (264-335 s on the shared 2-core box); tests/quickstart/"
    "test_pipeline.py runs the same pipeline with --fast, then --resume",
    "lmforge quickstart --out runs/qs --resume": "continues the full quickstart; tests/quickstart/test_pipeline.py "
    "interrupts and resumes a --fast one",
    "lmforge quickstart --fast": "10-20 s of training; tests/quickstart/test_pipeline.py runs exactly this",
    "lmforge quickstart --json": "the full quickstart (264-335 s on the shared 2-core box)",
}


def _commands_of(text: str) -> list[str]:
    """The `lmforge ...` commands of a markdown text's bash blocks, each as one whitespace-normalised line."""
    commands, in_bash, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_bash, pending = line.strip() == "```bash", ""
            continue
        if not in_bash:
            continue
        line = pending + line
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        code = re.sub(r"(^|\s)#.*$", "", line)  # a comment (no documented command quotes a '#')
        for part in code.split(";"):
            part = " ".join(part.split())
            if part.startswith("lmforge "):
                commands.append(part)
    return commands


def documented_commands() -> list[str]:
    return list(dict.fromkeys(command for doc in DOCS for command in _commands_of(doc.read_text(encoding="utf-8"))))


COMMANDS = documented_commands()
RUN = [command for command in COMMANDS if command not in SKIPPED]


def test_every_documented_command_is_run_or_skipped_with_a_reason():
    assert len(RUN) >= 30, RUN
    stale = [command for command in SKIPPED if command not in COMMANDS]
    assert not stale, f"SKIPPED lists commands the docs no longer have: {stale}"


def test_the_extraction_reads_blocks_continuations_comments_and_separators():
    text = (
        "```bash\nlmforge a --x 1   # note\nmake test\nlmforge b \\\n    --y 2; lmforge c\n```\n```\nlmforge d\n```\n"
    )
    assert _commands_of(text) == ["lmforge a --x 1", "lmforge b --y 2", "lmforge c"]


# ------------------------------------------------------------------------------------------- the user's folder

# Files some commands need in a particular state, and what they read on stdin.
SETUP: dict[str, Callable[[Path], None]] = {
    # --json trains sft.yaml: as the first run into its out folder (the others find it finished).
    "lmforge train sft.yaml --json": lambda folder: shutil.rmtree(folder / "runs" / "sft"),
}
STDIN = {"lmforge chat runs/quickstart/sft": "Sort 3 1 2.\n/save chat.jsonl\n"}
# Commands whose config (written by SETUP) names a hub model.
HUB_CONFIGS = {"lmforge train sft.yaml"}
# Absolute folders the docs name, rooted in the user's folder instead (a test writes nothing outside it).
ROOTED = {"/data/hf": "data/hf"}


def _hub_sft(folder: Path) -> None:
    """sft.yaml as docs/hub.md trains it: from a hub id, into a fresh out folder."""
    import yaml

    config = yaml.safe_load((folder / "sft.yaml").read_text())
    config["model"] = {"path": "Qwen/Qwen3-0.6B"}
    (folder / "sft.yaml").write_text(yaml.safe_dump(config))
    shutil.rmtree(folder / "runs" / "sft")


SETUP.update(
    {
        "lmforge train sft.yaml": _hub_sft,
        "lmforge plan --from-config run.yaml": lambda folder: shutil.copy(folder / "sft.yaml", folder / "run.yaml"),
    }
)


def _chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def _write_lines(path: Path, rows: list) -> None:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """The folder a user following the docs works in (see the module docstring)."""
    import os

    import numpy as np
    import torch
    import yaml
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("user") / "work"
    folder.mkdir()
    shutil.copytree(ROOT / "examples", folder / "examples")
    base = folder / "runs" / "quickstart" / "pretrain" / "final"
    shutil.copytree(tiny_llama_dir, base)
    vocab_size = json.loads((base / "config.json").read_text())["vocab_size"]
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": list(range(vocab_size))}))
    for name in ("MODEL_DIR", "model", "hf-model", "my-model", "Qwen2.5-0.5B-Instruct", "downloaded-model"):
        shutil.copytree(base, folder / name)
    sft = {
        "stage": "sft",
        "out": "runs/sft",
        "model": {"path": "runs/quickstart/pretrain"},
        "data": {"train": "builtin:arith-sft", "max_examples": 16, "max_len": 48, "eval_fraction": 0},
        "method": {"name": "lora", "lora_r": 4},
        "train": {"max_steps": 2, "micro_batch_size": 4, "save_every": 1},
    }
    (folder / "sft.yaml").write_text(yaml.safe_dump(sft))
    (folder / "cfg.yaml").write_text(yaml.safe_dump({**sft, "out": "runs/cfg"}))
    previous = Path.cwd()
    os.chdir(folder)
    try:  # the run, trained as the docs train it: relative paths from the user's folder
        assert CliRunner().invoke(app, ["train", "sft.yaml", "--json"]).exit_code == 0
        assert (
            CliRunner()
            .invoke(app, ["convert", "model", "Llama-3.1-8B-Instruct-Q4_K_M.gguf", "--quant", "q4_0", "--json"])
            .exit_code
            == 0
        )
    finally:
        os.chdir(previous)
    shutil.copytree(folder / "runs" / "sft", folder / "runs" / "quickstart" / "sft")
    shutil.copytree(folder / "runs" / "sft" / "final", folder / "my-lora-adapter")

    model = AutoModelForCausalLM.from_pretrained(base)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    for name in ("model.bin", "pytorch_model.bin", "a.pt"):
        torch.save(state, folder / name)
    (folder / "ckpt").mkdir()
    torch.save({"model": state, "step": 10}, folder / "ckpt" / "checkpoint.pt")
    (folder / "downloads").mkdir()
    save_file(state, folder / "downloads" / "model.safetensors")
    np.savez(folder / "b.npz", weight=np.ones((2, 2), np.float32))
    (folder / "c.pkl.gz").write_bytes(gzip.compress(pickle.dumps({"step": 3, "losses": [1.0, 0.5]})))
    model.save_pretrained(folder / "sharded", max_shard_size="300KB")
    for file in (folder / "sharded").glob("model*.safetensors*"):
        file.rename(folder / file.name)
    shutil.rmtree(folder / "sharded")
    _onnx(folder / "model.onnx")

    _write_lines(folder / "train.jsonl", [_chat("What is 2 plus 2?", "4"), "{not json", _chat("Sort 3 1 2.", "1 2 3")])
    (folder / "data.csv").write_text("question,answer\n" + "".join(f"What is {i} plus 1?,{i + 1}\n" for i in range(20)))
    chats = [_chat(f"What is {i} plus {i}?", str(2 * i)) for i in range(4)]
    _write_lines(folder / "prompts.jsonl", chats)
    _write_lines(folder / "prompts-with-answers.jsonl", chats)
    pairs = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
            "chosen": [{"role": "assistant", "content": str(2 * i)}],
            "rejected": [{"role": "assistant", "content": str(2 * i + 1)}],
        }
        for i in range(8)
    ]
    _write_lines(folder / "runs" / "sft-mistakes.jsonl", pairs)
    return folder


def _onnx(path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input_ids", "linear.weight"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.ones((4, 3), np.float32), name="linear.weight")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


# ----------------------------------------------------------------------------------- the hub the docs name


def _hub_ids(command: str) -> list[str]:
    """The org/name hub ids a command names (a local path is never spelled org/name in the docs' commands)."""
    return re.findall(r"(?<![\w./-])([A-Za-z][\w.-]*/[A-Za-z][\w.-]*)(?:@[\w.-]+)?(?![\w/])", command)


@pytest.fixture(scope="module")
def docs_hub(tmp_path_factory: pytest.TempPathFactory, user_folder: Path) -> Iterator[Any]:
    """A local hub (tests/hub/conftest.py) holding every repo the docs download or load, as the docs spell
    them: the quickstart-sized model under each name, at the revisions named, gated where the docs pass a
    token ("hf_..."), and GGUF files where the docs fetch one."""
    from tests.hub.conftest import LocalHub, create_app
    from tests.serve.conftest import run_server

    hub = LocalHub(cache=tmp_path_factory.mktemp("docs-hub"))
    base = user_folder / "runs" / "quickstart" / "pretrain" / "final"
    tiny = {path.name: path.read_bytes() for path in base.iterdir() if path.is_file()}
    gguf = (user_folder / "Llama-3.1-8B-Instruct-Q4_K_M.gguf").read_bytes()
    for repo_id in ("Qwen/Qwen3-0.6B", "org/model", "org/name", "acme/some-model"):
        hub.add(repo_id, tiny)
    for repo_id, tag in (("org/model", "v2.0"), ("org/name", "v1.0"), ("acme/some-model", "v1.0")):
        hub.add(repo_id, tiny, branch=tag)
    hub.add("meta-llama/Llama-3.1-8B-Instruct", tiny, token="hf_...")
    hub.add("TheBloke/x-GGUF", {"README.md": b"# x\n", "x-Q4_K_M.gguf": gguf, "x-Q8_0.gguf": gguf})
    with run_server(create_app(hub)) as (url, _):
        hub.url = url
        yield hub


@pytest.mark.parametrize("command", RUN, ids=[re.sub(r"[^\w./=,-]+", "_", command[8:])[:80] for command in RUN])
def test_documented_command_runs_as_written(
    command: str, user_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    folder = tmp_path / "work"
    shutil.copytree(user_folder, folder, symlinks=True)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(folder / "hf-cache"))
    hub_ids = [repo_id for repo_id in _hub_ids(command) if not (folder / repo_id).exists()]
    if command in HUB_CONFIGS or any(repo_id in request.getfixturevalue("docs_hub").repos for repo_id in hub_ids):
        _online(request.getfixturevalue("docs_hub").url, monkeypatch)
    if command in SETUP:
        SETUP[command](folder)
    args = [str(folder / ROOTED[arg]) if arg in ROOTED else arg for arg in shlex.split(command)[1:]]
    redirect = args.index(">") if ">" in args else None
    target = args[redirect + 1] if redirect is not None else None
    args = args[:redirect] if redirect is not None else args
    result = CliRunner().invoke(app, args, input=STDIN.get(command))
    # chat reports a failed turn as an "Error:" line and goes on, so the line itself is checked for.
    assert result.exit_code == 0 and "Traceback" not in result.output and "Error:" not in result.output, (
        f"{command}\n{result.output[-3000:]}"
    )
    if target is not None:
        (folder / target).write_text(result.stdout)


def _online(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads allowed from the local hub at `url` (as tests/hub/conftest.py's `online` sets it up)."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/no-stored-login")
