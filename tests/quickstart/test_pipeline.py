"""`lmforge quickstart --fast` end to end, then an interrupted run continued with --resume.

One test function on purpose: the fast quickstart is the biggest test in the suite (~1 minute), and
under pytest-xdist a shared fixture would run once per worker.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmforge.cli.main import app

POLICY_STAGES = ("pretrain", "sft", "dpo", "rlhf")


def _run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["quickstart", "--fast", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{") :])


def _check_outputs(out: Path, summary: dict) -> None:
    stages = summary["stages"]
    assert list(stages) == [
        "tokenizer",
        "pretrain",
        "plan",
        "sft",
        "pairs",
        "rm",
        "dpo",
        "rlhf",
        "export",
        "chat",
        "report",
    ]
    for name in POLICY_STAGES:
        assert 0.0 <= stages[name]["exact_match"] <= 1.0
        assert 0.0 <= stages[name]["preference_accuracy"] <= 1.0
        assert stages[name]["steps"] >= 1
    assert 0.0 <= stages["rm"]["reward_accuracy"] <= 1.0

    # DPO trains on pairs mined from the SFT policy's own answers to the built-in preference prompts.
    mined = stages["pairs"]["details"]
    train_pairs = (out / "data" / "arith-mistakes-train.jsonl").read_text().splitlines()
    assert mined["train"]["answers"] == len((out / "data" / "arith-pref-train.jsonl").read_text().splitlines())
    assert len(train_pairs) == mined["train"]["pairs"] + mined["train"]["topped_up"] >= 8  # at least a micro-batch
    assert "arith-mistakes-train.jsonl" in (out / "dpo" / "config.yaml").read_text()
    assert "sft_weight: 1.0" in (out / "dpo" / "config.yaml").read_text()
    reward_rows = (out / "data" / "arith-rm-train.jsonl").read_text().splitlines()
    assert len(reward_rows) == mined["train"]["answers"] + mined["train"]["pairs"]  # built-in + mined, no top-ups
    assert "arith-rm-train.jsonl" in (out / "rm" / "config.yaml").read_text()

    report = (out / "report.md").read_text()
    section = report.split("## Stages side by side")[1].split("## ")[0]
    table = [line for line in section.splitlines() if line.startswith("| ")][1:]  # without the header
    rows = {line.split("|")[1].strip(): line for line in table if not line.startswith("|---")}
    for name in ("tokenizer", "pretrain", "plan", "sft", "pairs", "rm", "dpo", "rlhf", "export", "chat"):
        assert name in rows
    sft_cells = [cell.strip() for cell in rows["sft"].split("|")]
    assert sft_cells[5] == f"{stages['sft']['exact_match']:.1%}"  # the report prints the measured figure
    before, after = stages["pretrain"]["exact_match"], stages["sft"]["exact_match"]
    assert f"**sft**: exact match {before:.1%} → {after:.1%}" in report
    for plot in ("stages.png", "losses.png"):
        assert (out / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{plot}" in report

    plan = stages["plan"]["details"]
    tiny, big = plan.values()
    assert big["params_total"] > 6_000_000_000 > tiny["params_total"]
    assert tiny["params_trainable"] == stages["sft"]["details"]["trainable_params"]  # the planner matches the run

    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = out / "export" / "model"
    model = AutoModelForCausalLM.from_pretrained(exported)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    ids = tokenizer("Sort the numbers 3 1 2.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert model(ids).logits.shape[-1] == model.config.vocab_size
    reader = GGUFReader(str(out / "export" / "model-f16.gguf"))
    assert len(reader.tensors) == stages["export"]["details"]["gguf_tensors"] > 0
    samples = stages["chat"]["details"]["samples"]
    assert {s["preset"] for s in samples} == {"precise", "creative"}


def test_fast_quickstart_end_to_end_then_resume_after_interruption(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    summary = _run("--out", str(out))
    _check_outputs(out, summary)

    # Interrupt DPO after its first checkpoint: drop its finished model and last checkpoint, and every later stage.
    state = json.loads((out / "quickstart.json").read_text())
    for name in ("dpo", "rlhf", "export", "chat", "report"):
        del state["stages"][name]
    (out / "quickstart.json").write_text(json.dumps(state))
    dpo = out / "dpo"
    checkpoints = sorted((dpo / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 2
    shutil.rmtree(checkpoints[-1])
    shutil.rmtree(dpo / "final")
    (dpo / "result.json").unlink()
    shutil.rmtree(out / "rlhf")
    (out / "report.md").unlink()
    sft_weights = out / "sft" / "final" / "adapter_model.safetensors"
    sft_written = sft_weights.stat().st_mtime_ns

    human = CliRunner().invoke(app, ["quickstart", "--fast", "--out", str(out), "--resume"])
    assert human.exit_code == 0, human.output
    assert "sft: done already, skipped" in human.output
    assert "resuming dpo from its last checkpoint" in human.output
    assert f"report: {out / 'report.md'}" in human.output
    resumed = json.loads((out / "quickstart.json").read_text())
    assert sft_weights.stat().st_mtime_ns == sft_written  # finished stages are skipped, not rerun
    for name in ("tokenizer", "pretrain", "plan", "sft", "pairs", "rm"):
        assert resumed["stages"][name] == summary["stages"][name]
    assert list(resumed["stages"]) == list(summary["stages"])
    steps = [
        json.loads(line)["step"]
        for line in (dpo / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps == list(range(1, summary["stages"]["dpo"]["steps"] + 1))  # continued from step 2, no repeats
    _check_outputs(out, resumed)

    # Killed after RLHF finished training but before it was scored: the run is kept, only the scoring reruns.
    scored = resumed["stages"]["rlhf"]["exact_match"]
    for name in ("rlhf", "export", "chat", "report"):
        del resumed["stages"][name]
    (out / "quickstart.json").write_text(json.dumps(resumed))
    rlhf_weights = out / "rlhf" / "final" / "adapter_model.safetensors"
    rlhf_written = rlhf_weights.stat().st_mtime_ns
    again = _run("--out", str(out), "--resume")
    assert rlhf_weights.stat().st_mtime_ns == rlhf_written
    assert again["stages"]["rlhf"]["exact_match"] == scored
    _check_outputs(out, again)


def test_refuses_a_folder_that_holds_a_quickstart_without_resume(tmp_path: Path) -> None:
    (tmp_path / "quickstart.json").write_text(json.dumps({"recipe": "fast", "stages": {}}))
    result = CliRunner().invoke(app, ["quickstart", "--fast", "--out", str(tmp_path)])
    assert result.exit_code == 2  # a UserInputError, not a crash
    assert "--resume" in result.output


def test_resume_needs_the_same_recipe(tmp_path: Path) -> None:
    (tmp_path / "quickstart.json").write_text(json.dumps({"recipe": "fast", "stages": {}}))
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "--resume"])
    assert result.exit_code == 2  # a UserInputError, not a crash
    assert "with --fast" in result.output


@pytest.mark.parametrize("make_folder", [False, True])
def test_resume_of_nothing_and_a_foreign_folder_are_clear_errors(tmp_path: Path, make_folder: bool) -> None:
    out = tmp_path / "somewhere"
    if make_folder:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        args = ["quickstart", "--fast", "--out", str(out)]
    else:
        args = ["quickstart", "--fast", "--out", str(out), "--resume"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2  # a UserInputError, not a crash
    assert result.output.startswith("Error: ")
    assert (out / "notes.txt").read_text() == "mine" if make_folder else not out.exists()


def test_sigkill_during_sft_then_resume_finishes_from_the_checkpoint(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    out = tmp_path / "qs"
    command = [sys.executable, "-m", "lmforge", "quickstart", "--fast", "--json", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = out / "sft" / "checkpoints"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and not list(checkpoints.glob("checkpoint-*")):
        time.sleep(0.02)
    process.kill()
    process.wait()
    state = json.loads((out / "quickstart.json").read_text())
    assert "pretrain" in state["stages"] and "sft" not in state["stages"]  # killed inside SFT
    assert not (out / "sft" / "final").exists()

    result = CliRunner().invoke(app, ["quickstart", "--fast", "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming sft from its last checkpoint" in result.output
    records = [json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert (out / "report.md").is_file() and (out / "export" / "model-f16.gguf").is_file()
