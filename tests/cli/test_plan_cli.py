"""`lmforge plan`, `lmforge models`, `lmforge gpus` through the real typer app."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmforge.cli.main import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_plan_json_prints_exactly_one_object_with_the_stable_keys():
    result = _run("plan", "llama-3.1-8b", "--method", "qlora", "--gpu", "rtx-4090", "--grad-ckpt", "full", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert data["model"]["name"] == "llama-3.1-8b"
    assert data["model"]["params_total"] == 8_030_261_248
    assert data["layout"]["gpus"] == 1 and data["layout"]["fits"]
    assert data["memory"]["per_gpu_bytes"] <= 0.9 * 24 * 1024**3
    assert {"throughput", "rules_of_thumb", "verdicts"} <= set(data)


def test_assumptions_are_printed_as_assumptions_with_the_values_used():
    """MFU, CUDA context, allocator slack, headroom and price move every figure: each is labelled an
    assumption, with the value this plan used and the flag that replaces it (issue 13 item 9)."""
    result = _run(
        "plan",
        "llama-3.1-8b",
        "--method",
        "lora",
        "--gpu",
        "h100-sxm",
        "--mfu",
        "0.3",
        "--price",
        "2.5",
        "--grad-ckpt",
        "full",
        "--headroom",
        "0.2",
        "--json",
    )
    assumptions = {item["name"]: item for item in json.loads(result.stdout)["assumptions"]}
    assert assumptions["model FLOPs utilisation"]["value"] == "30%"
    assert assumptions["model FLOPs utilisation"]["change"] == "--mfu"
    assert assumptions["allocator slack"]["value"] == "+22% of tensor memory"  # full recomputation
    assert assumptions["CUDA context and libraries"]["value"] == "768 MiB per GPU"
    assert assumptions["CUDA context and libraries"]["change"].startswith("no flag")  # none replaces it
    assert assumptions["headroom"]["value"] == "20% of each GPU kept free"
    assert assumptions["price"] == {
        "name": "price",
        "value": "$2.5 per GPU-hour",
        "basis": "given with --price",
        "change": "--price",
    }
    serving = json.loads(_run("plan", "llama-3.1-8b", "--task", "infer", "--gpu", "h100-sxm", "--json").stdout)
    names = [item["name"] for item in serving["assumptions"]]
    assert names[:2] == ["decode bandwidth", "prefill FLOPs utilisation"] and "price" not in names
    assert "+5% of tensor memory" in {item["value"] for item in serving["assumptions"]}
    text = _run("plan", "llama-3.1-8b", "--gpu", "h100-sxm").stdout
    assert "Assumptions (not measured for this run" in text and "model FLOPs utilisation" in text


def test_plan_human_output_shows_breakdown_rules_and_verdicts():
    result = _run("plan", "llama-2-7b", "--gpu", "a100-80g", "--gpus", "8")
    assert result.exit_code == 0, result.output
    for text in (
        "fits",
        "DP 8",
        "weights",
        "optimizer_states",
        "GiB",
        "Rules of thumb",
        "P(B) × 18 × 1.25",
        "h100-sxm",
    ):
        assert text in result.stdout, text


def test_plan_inference_human_output_and_headroom():
    result = _run("plan", "llama-3.1-70b", "--task", "infer", "--gpu", "a100-80g")
    assert result.exit_code == 0, result.output
    for text in (
        "fits",
        "TP 2",
        "kv_cache",
        "decode tokens/s",
        "time to first token",
        "Inference weights",
        "decode tok/s",
    ):
        assert text in result.stdout, text
    roomy = json.loads(_run("plan", "llama-2-7b", "--gpu", "rtx-4090", "--headroom", "0", "--json").stdout)
    tight = json.loads(_run("plan", "llama-2-7b", "--gpu", "rtx-4090", "--headroom", "0.5", "--json").stdout)
    assert roomy["memory"]["usable_bytes"] == 24 * 1024**3
    assert tight["layout"]["gpus"] > roomy["layout"]["gpus"]


def test_plan_inference_reports_decode_speed():
    result = _run("plan", "llama-2-7b", "--task", "infer", "--quant", "q4_k_m", "--seq-len", "1024", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["setup"]["weight_format"] == "Q4_K_M"
    assert data["throughput"]["decode_tokens_per_second"] > 300  # ~4 GB read per token on 2 TB/s


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "llama-9-70b"], "llama"),
        (["plan", "llama-3.1-8b", "--tp", "3"], "TP 3 does not divide 32 attention heads"),
        (["plan", "llama-3.1-8b", "--batch-size", "0"], "micro_batch_size must be a positive integer"),
        (["plan", "llama-3.1-8b", "--seq-len", "-4"], "seq_len"),
        (["plan", "llama-3.1-8b", "--gpu", "a100-81g"], "Unknown GPU"),
        (["plan", "llama-3.1-8b", "--gpu-mem", "0"], "gpu-mem"),
        (["plan", "llama-3.1-8b", "--tokens", "0"], "tokens"),
        (["plan", "llama-3.1-8b", "--mfu", "2"], "mfu"),
        (["plan", "llama-3.1-8b", "--price", "-1"], "price"),
        (["plan", "llama-3.1-8b", "--headroom", "1"], "headroom"),
        (["plan", "llama-3.1-8b", "--lora-rank", "0", "--method", "lora"], "lora_r"),
        (["plan", "llama-3.1-8b", "--tp", "0"], "--tp must be a positive integer"),
        (["plan", "llama-3.1-8b", "--pp", "2", "--zero", "3"], "pipeline"),
        (
            ["plan", "llama-3.1-8b", "--task", "infer", "--zero", "2"],
            "training-only options given with --task infer: --zero",
        ),
        (
            ["plan", "llama-3.1-8b", "--task", "infer", "--method", "lora", "--tokens", "5"],
            "--task infer: --method, --tokens",
        ),
        (["plan", "llama-3.1-8b", "--task", "infer", "--loss", "chunked"], "--task infer: --loss"),
        # Defect 8: QLoRA stores its base in bitsandbytes' nf4/int4/int8 only (was silently NF4).
        (["plan", "llama-3.1-8b", "--method", "qlora", "--quant", "fp8"], "--quant fp8 is not one of them"),
        (["plan", "llama-3.1-8b", "--method", "qlora", "--quant", "q4_k_m"], "--quant Q4_K_M is not one of them"),
        (["plan", "llama-3.1-8b", "--gpu-mem", "inf"], "finite"),  # was an OverflowError traceback
        (["plan", "gpt2", "--seq-len", "100000"], "1,024 learned positions"),
        (["plan", "llama-3.1-8b", "--lora-targets", "q_projection", "--method", "lora"], "q_projection match no layer"),
        (["plan", "llama-3.1-8b", "--optimizer-in-backward", "--grad-accum", "4"], "cannot accumulate"),
        (["plan", "llama-3.1-8b", "--task", "infer", "--target-rps", "5"], "--target-rps needs --prompt-len"),
        (["plan"], "needs a MODEL"),
    ],
)
def test_bad_input_is_one_error_line_and_a_nonzero_exit(args, message):
    result = _run(*args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr


def test_bad_choice_is_rejected_by_the_option_parser():
    result = _run("plan", "llama-3.1-8b", "--method", "dora")
    assert result.exit_code == 2 and "dora" in result.output


def test_plan_reads_a_local_config_json(tmp_path: Path):
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "intermediate_size": 128,
              "max_position_embeddings": 256}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = _run("plan", str(tmp_path), "--method", "lora", "--lora-rank", "4", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # embed 100×64 + 2 layers × (attention 64·(64+32+32+64) + MLP 3·64·128 + 2 norms·64) + final norm 64 + head 64×100
    assert data["model"]["params_total"] == 6400 + 2 * (12288 + 24576 + 128) + 64 + 6400
    assert data["model"]["params_trainable"] == 2 * 4 * (
        (64 + 64) + (64 + 32) * 2 + (64 + 64) + 2 * (64 + 128) + (128 + 64)
    )
    assert data["layout"]["gpus"] == 1


def test_malformed_config_names_the_missing_field(tmp_path: Path):
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
              "vocab_size": 100, "intermediate_size": 128}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = _run("plan", str(tmp_path))
    assert result.exit_code != 0 and "num_attention_heads" in result.stderr and "Traceback" not in result.output


def test_plot_writes_a_png(tmp_path: Path):
    target = tmp_path / "out" / "breakdown.png"
    result = _run("plan", "qwen2.5-0.5b", "--plot", str(target), "--json")
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.loads(result.stdout)  # the plot does not pollute --json output
    assert not [p for p in target.parent.iterdir() if p.name != "breakdown.png"]  # no temporary left behind


def test_models_and_gpus_tables():
    models = _run("models", "--json")
    rows = {row["name"]: row for row in json.loads(models.stdout)["models"]}
    names = set(rows)
    assert {"llama-3.1-8b", "mixtral-8x7b", "qwen3-30b-a3b"} <= names and len(names) >= 25
    # The seeds' 2025 table, with licence and context columns.
    assert {"gpt-oss-20b", "gpt-oss-120b", "falcon-180b", "stablelm-2-1.6b", "bloom-176b", "vicuna-13b"} <= names
    assert rows["gpt-oss-20b"]["license"] == "apache-2.0" and rows["gpt-oss-20b"]["context_tokens"] == 131072
    assert rows["bloom-176b"]["context_tokens"] is None  # ALiBi: no position table
    assert all(row["license"] for row in rows.values())
    assert rows["qwen2.5-vl-3b"]["params_total"] == 3_754_622_976  # the vision tower counted
    human = _run("models")
    assert "licence" in human.stdout and "bigscience-bloom-rail-1.0" in human.stdout
    gpus = _run("gpus")
    assert gpus.exit_code == 0 and "a100-80g" in gpus.stdout and "GB/s" in gpus.stdout
    assert len(json.loads(_run("gpus", "--json").stdout)["gpus"]) >= 15


def test_plan_json_cold_path_imports_no_torch_transformers_or_matplotlib():
    code = (
        "import sys\n"
        "from lmforge.cli.main import app\n"
        "try:\n"
        "    app(['plan', 'llama-3.1-70b', '--method', 'lora', '--gpu', 'a100-80g', '--json'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (0, None), stop.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'matplotlib', 'numpy', 'rich') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["layout"]["gpus"] >= 1
    assert "HEAVY []" in done.stderr


def test_simulate_flag_attaches_the_measured_step_and_plots_it(monkeypatch, tmp_path: Path):
    """The flag's wiring; the simulation itself is tested (and timed) in tests/plan/test_simulate.py."""
    from lmforge.plan import simulate
    from lmforge.plan.setup import MemoryBreakdown

    calls = []

    def fake_simulation(spec, setup):
        calls.append((spec.name, setup.method, setup.seq_len))
        memory = MemoryBreakdown({"weights": 1 << 30, "activations": 2 << 30})
        return simulate.SimulationResult(
            memory=memory,
            simulated_layers=(1, 2),
            num_layers=spec.num_layers,
            peak_phase="forward-backward",
            wall_seconds=0.1,
        )

    monkeypatch.setattr(simulate, "simulate_training", fake_simulation)
    target = tmp_path / "sim.png"
    result = _run(
        "plan", "qwen2.5-0.5b", "--method", "lora", "--seq-len", "512", "--simulate", "--json", "--plot", str(target)
    )
    assert result.exit_code == 0, result.output
    assert calls == [("qwen2.5-0.5b", "lora", 512)]
    assert json.loads(result.stdout)["simulation"]["total_bytes"] == 3 << 30
    assert target.read_bytes()[:4] == b"\x89PNG"
    human = _run("plan", "qwen2.5-0.5b", "--simulate")
    assert human.exit_code == 0 and "Simulated peak" in human.stdout and "3.00 GiB" in human.stdout
    refused = _run("plan", "qwen2.5-0.5b", "--task", "infer", "--simulate")
    assert refused.exit_code != 0 and "--task infer: --simulate" in refused.stderr


def test_cli_offload_choices_match_the_layout_search():
    from lmforge.cli import plan as plan_cli
    from lmforge.plan.layout import OFFLOAD_CHOICES

    assert [choice.value for choice in plan_cli.Offload] == list(OFFLOAD_CHOICES)


def test_every_training_knob_reaches_the_plan():
    result = _run(
        "plan",
        "mistral-7b",
        "--method",
        "lora",
        "--lora-targets",
        "q_proj,v_proj",
        "--lora-rank",
        "16",
        "--lora-alpha",
        "64",
        "--attention",
        "eager",
        "--loss",
        "chunked",
        "--grad-ckpt",
        "none",
        "--json",
    )
    assert result.exit_code == 0, result.output
    setup = json.loads(result.stdout)["setup"]
    assert setup["target_modules"] == ["q_proj", "v_proj"] and (setup["lora_r"], setup["lora_alpha"]) == (16, 64)
    assert (setup["attention"], setup["loss"], setup["recompute"]) == ("eager", "chunked", "none")
    assert json.loads(result.stdout)["model"]["params_trainable"] == 32 * 16 * (2 * 4096 + 4096 + 1024)
    frozen = json.loads(_run("plan", "llama-3.2-1b", "--method", "freeze", "--freeze-layers", "4", "--json").stdout)
    assert frozen["setup"]["trainable_layers"] == 4
    prompt = json.loads(_run("plan", "llama-3.2-1b", "--method", "prompt", "--virtual-tokens", "50", "--json").stdout)
    assert prompt["model"]["params_trainable"] == 50 * 2048
    torchtune = json.loads(
        _run("plan", "llama-3.2-1b", "--offload-activations", "--optimizer-in-backward", "--json").stdout
    )
    assert torchtune["setup"]["offload_activations"] and torchtune["setup"]["optimizer_in_backward"]
    assert "torchtune" in torchtune["layout"]["engine"]


def test_inference_context_defaults_to_the_python_apis_4096_tokens():
    data = json.loads(_run("plan", "llama-2-7b", "--task", "infer", "--json").stdout)
    assert data["setup"]["context_len"] == 4096  # was 2,048 on the CLI


def test_from_config_plans_exactly_what_the_training_config_runs(tmp_path: Path, tiny_llama_dir: Path):
    import yaml

    config = {
        "stage": "sft",
        "out": str(tmp_path / "run"),
        "model": {"path": str(tiny_llama_dir)},
        "method": {"name": "lora", "lora_r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "data": {"max_len": 96},
        "train": {
            "micro_batch_size": 3,
            "grad_accum": 2,
            "gradient_checkpointing": True,
            "loss": "chunked",
            "precision": "bf16",
            "target_gpu": "a100-80g",
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _run("plan", "--from-config", str(path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    setup = data["setup"]
    assert (setup["method"], setup["lora_r"], setup["lora_alpha"], setup["target_modules"]) == (
        "lora",
        4,
        8,
        ["q_proj", "v_proj"],
    )
    assert (setup["micro_batch_size"], setup["grad_accum"], setup["seq_len"]) == (3, 2, 96)
    assert (setup["recompute"], setup["loss"], setup["precision"]) == ("full", "chunked", "bf16-mixed")
    assert data["gpu"]["name"] == "a100-80g" and data["levers"] == [] and data["layout"]["tp"] == 1
    both = _run("plan", "llama-2-7b", "--from-config", str(path))
    assert both.exit_code != 0 and "not both" in both.stderr


def test_method_knobs_default_to_the_training_configs():
    """`lmforge plan --method X` with nothing else set plans what `lmforge train` runs with nothing set."""
    from lmforge.train.config import MethodSection

    defaults = MethodSection()
    for method, keys in (
        ("lora", ("lora_r", "lora_alpha", "quant_bits")),
        ("freeze", ("trainable_layers",)),
        ("prompt", ("num_virtual_tokens",)),
    ):
        setup = json.loads(_run("plan", "llama-3.2-1b", "--method", method, "--json").stdout)["setup"]
        assert {key: setup[key] for key in keys} == {key: getattr(defaults, key) for key in keys}
