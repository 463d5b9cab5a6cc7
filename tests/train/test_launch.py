"""accelerate launch: DeepSpeed/FSDP config content, and 2-process DDP on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmforge.errors import LmforgeError, UserInputError
from lmforge.train.callbacks import read_metrics
from lmforge.train.launch import deepspeed_config, launch_command, write_launch_files
from lmforge.train.run import run_training


def test_zero3_offload_config(make_config):
    config = make_config("sft", "full", train={"precision": "bf16"})
    accelerate_file = write_launch_files(config, 8, deepspeed="zero3-offload", num_machines=2)
    settings = yaml.safe_load(accelerate_file.read_text())
    assert settings["distributed_type"] == "DEEPSPEED" and settings["num_processes"] == 8
    assert settings["num_machines"] == 2 and settings["mixed_precision"] == "bf16"
    ds = json.loads(Path(settings["deepspeed_config"]["deepspeed_config_file"]).read_text())
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu" and zero["stage3_gather_16bit_weights_on_model_save"]
    assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["gradient_accumulation_steps"] == "auto"


def test_zero2_has_no_param_offload():
    zero = deepspeed_config("zero2-offload")["zero_optimization"]
    assert zero["stage"] == 2 and "offload_param" not in zero and "offload_optimizer" in zero
    with pytest.raises(UserInputError, match="allowed: zero2"):
        deepspeed_config("zero4")


def test_fsdp_config(make_config):
    config = make_config("sft", "full", train={"gradient_checkpointing": True})
    settings = yaml.safe_load(write_launch_files(config, 4, fsdp=True).read_text())
    assert settings["distributed_type"] == "FSDP"
    fsdp = settings["fsdp_config"]
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and fsdp["fsdp_activation_checkpointing"]
    with pytest.raises(UserInputError, match="one of --deepspeed and --fsdp"):
        write_launch_files(config, 4, fsdp=True, deepspeed="zero2")


@pytest.mark.parametrize("sharding", [{"fsdp": True}, {"deepspeed": "zero3"}, {"deepspeed": "zero3-offload"}])
def test_qlora_is_not_sharded(make_config, sharding):
    with pytest.raises(UserInputError, match="qlora cannot be sharded"):
        write_launch_files(make_config("sft", "qlora"), 2, **sharding)
    settings = yaml.safe_load(write_launch_files(make_config("sft", "qlora"), 2, deepspeed="zero2").read_text())
    assert settings["distributed_type"] == "DEEPSPEED"


@pytest.mark.parametrize("engine", [{"fsdp": True}, {"deepspeed": "zero2"}])
def test_sharded_launch_on_a_cpu_is_refused_before_anything_starts(make_config, tmp_path, monkeypatch, engine):
    """On a CPU the Trainer would quietly train plain DDP under an FSDP or DeepSpeed config."""
    import torch

    from lmforge.train import launch as launching

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(launching.subprocess, "call", lambda *a, **k: pytest.fail("a process was started"))
    config = make_config("sft", "full", out=str(tmp_path / "run"))
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    with pytest.raises(UserInputError, match="needs CUDA GPUs.*--nproc N alone"):
        launching.launch(config_file, [], nproc=2, **engine)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("method", "train", "message"),
    [
        ("qlora", {}, "method qlora needs a CUDA GPU"),
        ("lora", {"offload_activations": True}, "train.offload_activations .* needs a CUDA GPU"),
        ("lora", {"report_to": ["wandb"]}, "wandb"),  # not installed here, nor in CI
    ],
)
def test_the_launcher_checks_what_each_process_would_before_starting_any(
    make_config, tmp_path, monkeypatch, method, train, message
):
    """A qlora, activation-offloading or missing-tracker config on a CPU fails once, in the launcher, before the
    data is prepared and the processes start (each would fail at its own preflight)."""
    import torch

    from lmforge.train import launch as launching

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(launching.subprocess, "call", lambda *a, **k: pytest.fail("a process was started"))
    config = make_config("sft", method, out=str(tmp_path / "run"), train=train)
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    with pytest.raises(LmforgeError, match=message):
        launching.launch(config_file, [], nproc=2)
    assert not (tmp_path / "run").exists()


def test_a_process_launched_with_fsdp_on_a_cpu_stops_before_the_run_folder(make_config, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    config = make_config("sft", "full", out=str(tmp_path / "run"))
    with pytest.raises(UserInputError, match="--fsdp needs CUDA GPUs"):
        run_training(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_launch_command_passes_overrides_and_resume(tmp_path):
    command = launch_command(tmp_path / "a.yaml", "c.yaml", ["train.max_steps=3"], resume=True)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[-7:] == ["-m", "lmforge", "train", "c.yaml", "--set", "train.max_steps=3", "--resume"]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_same_global_batch(make_config, tmp_path):
    """Global batch 4: one process x micro-batch 4 vs two processes x micro-batch 2 (gloo on the CPU); the
    parent prepares RUN/data once and both processes read it (neither tokenizes)."""
    settings = {"data": {"max_examples": 32}, "train": {"max_steps": 3, "lr_scheduler": "constant"}}
    single = run_training(
        make_config(
            "sft",
            "full",
            out=str(tmp_path / "one"),
            data=settings["data"],
            train={**settings["train"], "micro_batch_size": 4},
        ),
        progress=False,
    )
    config = make_config("sft", "full", out=str(tmp_path / "two"), **settings)
    config_file = tmp_path / "two.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmforge",
            "train",
            str(config_file),
            "--nproc",
            "2",
            "--set",
            "train.micro_batch_size=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    said = completed.stdout + completed.stderr
    assert "data: prepared" in said and "before launch" in said  # the parent, before spawning
    assert "data: reused" in said and said.count("data: prepared") == 1  # rank 0 read it; rank 1 prints nothing
    one = {r["step"]: r["loss"] for r in read_metrics(single.run_dir / "metrics.jsonl") if "loss" in r}
    two = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl") if "loss" in r}
    assert sorted(two) == [1, 2, 3]
    for step in (1, 2, 3):
        assert two[step] == pytest.approx(one[step], abs=1e-5)


def test_deepspeed_mode_follows_the_planners_layout(make_config, tmp_path):
    from lmforge.train.launch import deepspeed_mode_from_plan, planned_deepspeed_mode

    folder = tmp_path / "llama-8b-config"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": 4096,
                "intermediate_size": 14336,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "vocab_size": 128256,
            }
        )
    )
    config = make_config(
        "sft",
        "full",
        model={"path": str(folder)},
        data={"max_len": 2048},
        train={"target_gpu": "A100-80GB", "micro_batch_size": 1, "precision": "bf16"},
    )
    assert planned_deepspeed_mode(config, 8) == "zero2"  # 8B full fine-tuning on 8 x 80 GB: ZeRO-2 fits
    with pytest.raises(UserInputError, match="does not fit"):
        planned_deepspeed_mode(config, 2)
    assert deepspeed_mode_from_plan({"fits": True, "zero_stage": 0}) is None
    assert deepspeed_mode_from_plan({"fits": True, "zero_stage": 3, "offload_optimizer": True}) == "zero3-offload"
