"""The GPU proof in one prepared command: planner vs measured peaks, QLoRA on CUDA, DeepSpeed ZeRO-2/3 and
FSDP launches, serving beside `transformers serve`, training speed beside a plain PyTorch loop.

    python benchmarks/gpu_check.py OUT                 # on a CUDA machine (make gpu-check)
    python benchmarks/gpu_check.py OUT --dry-run       # the same orchestration on tiny models, on a CPU
    python benchmarks/gpu_check.py OUT --only planner,serve --deadline-s 300

GPU time is scarce (a few minutes at a time), so this is one command that must not lose what it measured:
each check runs in its own child process with its own time limit, writes its result as soon as it has it,
and a check that fails or runs out of time is reported as such while the others go on. OUT receives
gpu_check.json (everything), gpu_check.md (the tables) and gpu_check.log (every child's output).

Models are random-weight models built from lmforge's catalog configs (no download), with a synthetic
byte-level BPE tokenizer of the catalog's vocabulary size: the logits, embeddings and the head cost what
they cost in the real model, and every id a random model samples decodes to text (serving needs that).

Checks:
  env      GPU, driver and library versions.
  models   the random-weight model folders (bf16 safetensors + tokenizer).
  planner  real training steps through lmforge's own run_training, per configuration (one with
           train.offload_activations): the planner's per-GPU figure and breakdown (plan.json) beside
           torch.cuda.max_memory_allocated, max_memory_reserved and the NVML-visible total of the process.
  qlora    `lmforge train` with method qlora (bitsandbytes NF4 on CUDA), then the adapter reloaded by
           `lmforge generate`; the float model quantized on load (`--quant nf4`) by generate and by serve.
  launch   `lmforge train --nproc 1` with --deepspeed zero2, --deepspeed zero3 and --fsdp; the saved final model
           reloaded whole with from_pretrained and compared with the starting weights.
  serve    `lmforge bench serve` at concurrency 1, 16, 64 and the same client load against
           `transformers serve --continuous-batching`; decode speed beside the planner's bandwidth bound.
  speed    tokens/s and MFU of a full fine-tune through lmforge vs a plain PyTorch loop, same model and batch.

Wheels: where the machine lacks lmforge's dependencies (or has older ones than lmforge is tested with),
`make gpu-wheels` downloads them into .whl/ and `--wheels .whl` installs the missing or older ones into a
temporary folder on PYTHONPATH before any check starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("env", "models", "planner", "qlora", "launch", "speed", "serve")
# Seconds each check may take at most (the overall --deadline-s cuts them shorter when time runs out).
CHECK_LIMIT_S = {"env": 40, "models": 120, "planner": 200, "qlora": 120, "launch": 200, "speed": 70, "serve": 120}
# A dry run's tiny models on a loaded 2-core CI machine can take longer than the real sizes on a GPU: there the
# limits only guard against a hang, so they are this many times longer.
DRY_RUN_LIMIT_FACTOR = 2.5
TARGET_GPU = "h200"  # the planner's catalog card for the machine this was written for; env records the real one
STEPS = 3  # optimizer steps per planner configuration: the peak is reached in the first step


@dataclass(frozen=True)
class Case:
    """One planner-vs-measurement configuration."""

    model: str  # catalog name
    method: str  # full | lora | qlora
    seq_len: int
    micro_batch: int
    checkpointing: bool
    offload: bool = False  # train.offload_activations: saved activations in pinned CPU memory (CUDA only)

    @property
    def name(self) -> str:
        flags = ("-ckpt" if self.checkpointing else "") + ("-offload" if self.offload else "")
        return f"{self.model}-{self.method}-s{self.seq_len}-b{self.micro_batch}{flags}"


CASES = (
    Case("qwen2.5-0.5b", "full", 512, 8, False),
    Case("qwen2.5-0.5b", "full", 2048, 4, True),
    Case("llama-3.2-1b", "full", 1024, 4, False),
    Case("llama-3.2-1b", "full", 4096, 2, True),
    Case("llama-3.2-1b", "full", 4096, 2, True, offload=True),  # the row above with activations offloaded
    Case("qwen2.5-1.5b", "full", 2048, 2, False),
    Case("qwen2.5-1.5b", "lora", 4096, 4, False),
    Case("llama-3.1-8b", "lora", 2048, 2, True),
    Case("llama-3.1-8b", "qlora", 2048, 2, True),
    Case("llama-3.1-8b", "qlora", 512, 4, False),
    Case("qwen2.5-1.5b", "qlora", 1024, 8, False),
)
# full, full + recompute, offload (skipped on a CPU), lora, qlora (skipped on a CPU)
DRY_CASES = (CASES[0], CASES[1], CASES[4], CASES[7], CASES[8])
SERVE_MODEL = "qwen2.5-0.5b"  # the ~0.5B model of the serving and speed checks
LAUNCH_MODEL = "qwen2.5-0.5b"


# ---------------------------------------------------------------- shared by the children


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def dry_config(config: dict[str, Any]) -> dict[str, Any]:
    """A catalog config shrunk to run on a CPU in seconds: same family and shape rules, tiny sizes."""
    heads = 4
    kv = 2 if config.get("num_key_value_heads", heads) != config.get("num_attention_heads") else heads
    return {
        **config,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": 16,
        "vocab_size": 1024,
    }


def scaled(case: Case, dry: bool) -> Case:
    """The dry run keeps each configuration's method and checkpointing at CPU-sized lengths."""
    return replace(case, seq_len=min(case.seq_len, 64), micro_batch=min(case.micro_batch, 2)) if dry else case


def synthetic_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE trained on `texts`, then grown to exactly `vocab_size` tokens with further merges of
    existing tokens, so a random model over the catalog's vocabulary samples only ids that decode to text."""
    from tokenizers import Tokenizer, models

    from lmforge.data.tokenizer import train_bpe_tokenizer

    trained = train_bpe_tokenizer(texts, vocab_size=min(4096, vocab_size))
    state = json.loads(trained.backend_tokenizer.to_str())
    vocab: dict[str, int] = dict(state["model"]["vocab"])
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    specials = {t["content"] for t in state["added_tokens"]}
    pieces = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1]) if token not in specials]
    left = 0
    while len(vocab) < vocab_size:  # deterministic: pair every piece with the next ones, in id order
        for right in range(len(pieces)):
            if len(vocab) >= vocab_size:
                break
            joined = pieces[left] + pieces[right]
            if joined not in vocab:
                vocab[joined] = len(vocab)
                merges.append((pieces[left], pieces[right]))
                pieces.append(joined)
        left += 1
    backend = trained.backend_tokenizer
    grown = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    grown.pre_tokenizer, grown.decoder = backend.pre_tokenizer, backend.decoder
    for token in state["added_tokens"]:
        grown.add_special_tokens([token["content"]])
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=grown,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
    )
    wrapped.chat_template = trained.chat_template
    return wrapped


def corpus_texts(n: int) -> list[str]:
    from lmforge.data.builtin import load_builtin

    return list(load_builtin("builtin:corpus", n=n)["text"])


def write_corpus(work: Path, n: int) -> Path:
    """The training text as a JSONL file: long enough for every configuration's blocks of 4,096 tokens."""
    path = work / "corpus.jsonl"
    if not path.is_file():
        lines = "".join(json.dumps({"text": text}) + "\n" for text in corpus_texts(n))
        path.write_text(lines, encoding="utf-8")
    return path


def model_dir(work: Path, name: str) -> Path:
    return work / "models" / name


def train_config(case: Case, work: Path, out: Path, *, steps: int = STEPS, stage: str = "pretrain") -> dict[str, Any]:
    """The lmforge config of one configuration: pretraining blocks of exactly seq_len tokens, so every micro-batch
    is full length (SFT's dynamic padding would make the memory depend on the longest chat)."""
    on_gpu = cuda()
    return {
        "stage": stage,
        "out": str(out),
        "model": {"path": str(model_dir(work, case.model))},
        # packing off: the GPT recipe's blocks of exactly seq_len tokens (packed rows would be a little shorter)
        "data": {"train": str(work / "corpus.jsonl"), "max_len": case.seq_len, "eval_fraction": 0, "packing": "off"},
        "method": {"name": case.method},
        "train": {
            "max_steps": steps,
            "micro_batch_size": case.micro_batch,
            "learning_rate": 1e-5,
            "lr_scheduler": "constant",
            "gradient_checkpointing": case.checkpointing,
            "offload_activations": case.offload,
            "precision": "bf16" if on_gpu else "fp32",
            "target_gpu": TARGET_GPU,
            "seed": 0,
        },
    }


class NvmlPeak:
    """The device's used memory sampled every 20 ms in a thread: the peak minus the level before this process
    touched CUDA is what `nvidia-smi` would show for it (context, allocator reserve, library workspaces)."""

    def __init__(self) -> None:
        import threading

        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.before_process = self.used()
        self.peak = 0
        self._stop = threading.Event()
        self._thread: Any = None

    def used(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def __enter__(self) -> NvmlPeak:
        import threading

        self.peak = self.used()
        self._stop.clear()

        def sample() -> None:
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, self.used())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def process_peak_bytes(self) -> int:
        return self.peak - self.before_process


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def lmforge_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmforge", *args]


def run_logged(command: list[str], log: Path, timeout_s: float, env: dict[str, str] | None = None) -> int:
    """Run a command with its output appended to `log`; a timeout kills it and returns 124."""
    with log.open("a", encoding="utf-8") as file:
        file.write(f"\n$ {' '.join(command)}\n")
        file.flush()
        process = subprocess.Popen(
            command, stdout=file, stderr=subprocess.STDOUT, env=env or os.environ.copy(), start_new_session=True
        )
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            file.write(f"\n[killed after {timeout_s:.0f} s]\n")
            return 124


# ---------------------------------------------------------------- the checks (each runs in a child process)


def check_env(work: Path, dry: bool, log: Path, limit_s: float) -> dict[str, Any]:
    import importlib.metadata
    import platform

    import torch

    names = (
        "torch",
        "transformers",
        "peft",
        "trl",
        "accelerate",
        "datasets",
        "bitsandbytes",
        "deepspeed",
        "safetensors",
        "tokenizers",
        "huggingface_hub",
        "fastapi",
        "uvicorn",
        "pydantic",
        "nvidia-ml-py",
        "numpy",
        "pyarrow",
        "pandas",
        "regex",
        "openai",
    )
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "versions": versions,
        "cuda": torch.cuda.is_available(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        result.update(
            gpu=properties.name,
            gpu_memory_bytes=properties.total_memory,
            cuda_version=torch.version.cuda,
            bf16=torch.cuda.is_bf16_supported(),
        )
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        result["nvidia_smi"] = smi.stdout.strip()
    result["work_free_bytes"] = shutil.disk_usage(work).free
    return result


def check_models(work: Path, dry: bool, log: Path, limit_s: float) -> dict[str, Any]:
    """Random-weight bf16 models from the catalog configs, initialised on the GPU (seconds for 8B), saved once."""
    import torch
    import transformers

    from lmforge.plan.models import resolve_model

    names = sorted({case.model for case in CASES} | {SERVE_MODEL, LAUNCH_MODEL})
    texts = corpus_texts(6000)
    write_corpus(work, 6000)
    built: dict[str, Any] = {}
    tokenizers: dict[int, Any] = {}
    for name in names:
        started = time.perf_counter()
        folder = model_dir(work, name)
        raw = dict(resolve_model(name).config)
        raw.pop("architectures", None)
        raw.pop("torch_dtype", None)
        if dry:
            raw = dry_config(raw)
        vocab = int(raw["vocab_size"])
        if vocab not in tokenizers:
            tokenizers[vocab] = synthetic_tokenizer(texts[:3000], vocab)
        tokenizer = tokenizers[vocab]
        model_type = raw.pop("model_type")
        config = transformers.AutoConfig.for_model(model_type, **raw)
        config.eos_token_id, config.pad_token_id, config.bos_token_id = (
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
            None,
        )
        device = "cuda" if cuda() else "cpu"
        torch.manual_seed(0)
        with torch.device(device):
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = None
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
        if cuda():
            torch.cuda.empty_cache()
        built[name] = {
            "params": params,
            "vocab_size": vocab,
            "tokenizer_size": len(tokenizer),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"built {name}: {params:,} params in {built[name]['seconds']} s", flush=True)
    return {"models": built}


def _planner_row(
    case: Case,
    plan: dict[str, Any],
    allocated: int | None,
    reserved: int | None,
    nvml: int | None,
    nvml_start: int | None,
    seconds: float,
) -> dict[str, Any]:
    planner = plan.get("planner", {})
    memory = planner.get("memory", {})
    breakdown = memory.get("breakdown", {})
    total = memory.get("per_gpu_bytes")
    overhead = breakdown.get("overhead", 0)
    tensors = total - overhead if total is not None else None  # what max_memory_allocated measures
    row: dict[str, Any] = {
        **asdict(case),
        "case": case.name,
        "planned_total_bytes": total,
        "planned_tensor_bytes": tensors,
        "planned_breakdown": breakdown,
        "planned_recompute": planner.get("setup", {}).get("recompute"),
        "planned_precision": planner.get("setup", {}).get("precision"),
        "planned_trainable": planner.get("model", {}).get("params_trainable"),
        "actual_trainable": plan.get("actual", {}).get("trainable_params"),
        "max_allocated_bytes": allocated,
        "max_reserved_bytes": reserved,
        "nvml_process_bytes": nvml,
        "nvml_before_case_bytes": nvml_start,
        "seconds": round(seconds, 1),
    }
    if allocated and tensors:
        row["error_vs_allocated"] = round(tensors / allocated - 1, 4)
    if nvml and total:
        row["error_total_vs_nvml"] = round(total / nvml - 1, 4)
    if "error" in planner:
        row["planner_error"] = planner["error"]
    return row


def check_planner(work: Path, dry: bool, log: Path, limit_s: float) -> dict[str, Any]:
    """Every configuration in this process, one after the other (imports once); results appended as they come,
    so the parent can restart this child after a crash and it continues with the configurations left."""
    import gc

    import torch

    from lmforge.train.config import validate_config
    from lmforge.train.run import run_training

    done_file = work / "planner.jsonl"
    done = {row["case"] for row in read_jsonl(done_file)}
    gpu = cuda()
    nvml = NvmlPeak() if gpu else None
    for original in DRY_CASES if dry else CASES:
        case = scaled(original, dry)
        if case.name in done:
            continue
        if case.method == "qlora" and not gpu:
            append_jsonl(done_file, {**asdict(case), "case": case.name, "skipped": "qlora needs CUDA (bitsandbytes)"})
            continue
        if case.offload and not gpu:
            skipped = "activation offloading needs CUDA (lmforge train refuses it on a CPU)"
            append_jsonl(done_file, {**asdict(case), "case": case.name, "skipped": skipped})
            continue
        # A marker first: if this configuration kills the process, the restarted child records it as failed.
        append_jsonl(done_file, {"case": case.name, "started": True})
        out = work / "runs" / case.name
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        try:
            config = validate_config(train_config(case, work, out))
            nvml_bytes = nvml_start = None
            # What earlier configurations left in this process: live tensors are inside max_memory_allocated, so
            # the run's own peak is the reading minus them (H200 run 4 showed 2.5 GB more NVML use than a fresh
            # process before every configuration after the first, without saying whether it was allocated).
            left_allocated = int(torch.cuda.memory_allocated()) if gpu else None
            left_reserved = int(torch.cuda.memory_reserved()) if gpu else None
            if nvml is not None:
                nvml_start = nvml.used() - nvml.before_process  # what earlier configurations left behind
                with nvml:
                    run_training(config, progress=False)
                nvml_bytes = nvml.process_peak_bytes
            else:
                run_training(config, progress=False)
            plan = json.loads((out / "plan.json").read_text())
            reserved = int(torch.cuda.max_memory_reserved()) if gpu else None
            allocated = plan.get("actual", {}).get("peak_memory_bytes")
            if allocated and left_allocated:
                allocated = int(allocated) - left_allocated
            row = _planner_row(
                case,
                plan,
                int(allocated) if allocated else None,
                reserved,
                nvml_bytes,
                nvml_start,
                time.perf_counter() - started,
            )
            row.update(allocated_before_case_bytes=left_allocated, reserved_before_case_bytes=left_reserved)
        except Exception as error:  # a failed configuration is a finding; the others still run
            traceback.print_exc()
            row = {**asdict(case), "case": case.name, "failed": f"{type(error).__name__}: {error}"[:400]}
        append_jsonl(done_file, row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(out, ignore_errors=True)
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()
    return {"rows": _final_rows(done_file)}


def _final_rows(done_file: Path) -> list[dict[str, Any]]:
    """The last record of each configuration; one left at its start marker killed the process."""
    rows: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(done_file):
        rows[record["case"]] = record
    return [
        row if not row.get("started") else {**row, "failed": "the process died in this configuration"}
        for row in rows.values()
    ]


def _write_yaml(path: Path, config: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def check_qlora(work: Path, dry: bool, log: Path, limit_s: float) -> dict[str, Any]:
    """QLoRA through the `lmforge train` command, then its adapter reloaded by `lmforge generate`."""
    if not cuda():
        return {"skipped": "qlora needs CUDA (bitsandbytes 4-bit kernels); lmforge train refuses it on a CPU"}
    from safetensors import safe_open

    case = Case(SERVE_MODEL, "qlora", 512, 4, True)
    out = work / "runs" / "qlora-cli"
    shutil.rmtree(out, ignore_errors=True)
    config = _write_yaml(work / "qlora.yaml", train_config(case, work, out, steps=5, stage="pretrain"))
    started = time.perf_counter()
    code = run_logged(lmforge_command("train", str(config)), log, limit_s / 2)
    result: dict[str, Any] = {"train_exit": code, "train_seconds": round(time.perf_counter() - started, 1)}
    adapter = out / "final" / "adapter_model.safetensors"
    if code != 0 or not adapter.is_file():
        return {**result, "ok": False}
    with safe_open(str(adapter), "pt") as file:
        b_norms = [float(file.get_tensor(k).float().norm()) for k in file if "lora_B" in k]
    plan = json.loads((out / "plan.json").read_text())
    result.update(
        lora_b_tensors=len(b_norms),
        lora_b_nonzero=sum(1 for n in b_norms if n > 0),
        peak_allocated_bytes=plan.get("actual", {}).get("peak_memory_bytes"),
        planned_bytes=plan.get("planner", {}).get("memory", {}).get("per_gpu_bytes"),
    )
    generated = subprocess.run(
        lmforge_command("generate", str(out), "The cat finds", "--greedy", "--max-new-tokens", "8", "--raw"),
        capture_output=True,
        text=True,
        timeout=limit_s / 2,
        check=False,
    )
    with log.open("a") as file:
        file.write(generated.stdout + generated.stderr)
    result.update(generate_exit=generated.returncode, generated=generated.stdout.strip()[-200:])
    result["quant_on_load"] = _quant_on_load(model_dir(work, SERVE_MODEL), log, limit_s / 4)
    result["ok"] = (
        code == 0
        and generated.returncode == 0
        and result["lora_b_nonzero"] == len(b_norms) > 0
        and result["quant_on_load"]["ok"]
    )
    return result


def _quant_on_load(model: Path, log: Path, timeout_s: float) -> dict[str, Any]:
    """`--quant nf4` on the float model: `lmforge generate` answers, and `lmforge serve` answers a chat request
    (bitsandbytes' CUDA kernels, where the CPU tests run its CPU backend)."""
    import httpx

    from lmforge.serve.bench import local_server

    generated = subprocess.run(
        lmforge_command("generate", str(model), "The cat finds", "--quant", "nf4", "--greedy", "--max-new-tokens", "8"),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    with log.open("a") as file:
        file.write(generated.stdout + generated.stderr)
    result: dict[str, Any] = {"generate_exit": generated.returncode}
    serve = [sys.executable, "-m", "lmforge", "serve", str(model), "--port", "{port}", "--quant", "nf4"]
    try:
        with local_server(str(model), command=serve, start_timeout_s=timeout_s) as url:
            reply = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": str(model), "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
                timeout=timeout_s,
            )
        result.update(serve_status=reply.status_code, serve_usage=reply.json().get("usage"))
    except Exception as error:  # a failed server is a finding; the report says what happened
        result["serve_failed"] = f"{type(error).__name__}: {error}"[:300]
    result["ok"] = generated.returncode == 0 and result.get("serve_status") == 200
    return result


def _compare_weights(start: Path, final: Path) -> dict[str, Any]:
    """The saved model reloads whole with from_pretrained: same tensor names and shapes as the start, every value
    finite, and training moved the weights."""
    import torch
    import transformers

    before = transformers.AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32).state_dict()
    after = transformers.AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).state_dict()
    same_shapes = before.keys() == after.keys() and all(before[k].shape == after[k].shape for k in before)
    finite = all(bool(torch.isfinite(t).all()) for t in after.values())
    changed = sum(1 for k in before if k in after and not torch.equal(before[k], after[k]))
    return {
        "reloaded": True,
        "same_names_and_shapes": same_shapes,
        "finite": finite,
        "tensors": len(after),
        "tensors_changed": changed,
    }


def check_launch(work: Path, dry: bool, log: Path, limit_s: float) -> dict[str, Any]:
    """`lmforge train --nproc 1` with each sharding engine; each final model reloaded and compared."""
    if not cuda():
        return {
            "skipped": "DeepSpeed and FSDP shard over CUDA GPUs; lmforge refuses them on a CPU (on a CPU the "
            "Trainer would quietly run plain DDP)"
        }
    results = {}
    case = Case(LAUNCH_MODEL, "full", 512, 4, False)
    launches = (
        ("deepspeed-zero3", ["--deepspeed", "zero3"]),
        ("fsdp2", ["--fsdp"]),
        ("deepspeed-zero2", ["--deepspeed", "zero2"]),
    )
    check_started = time.perf_counter()
    for index, (label, flags) in enumerate(launches):
        out = work / "runs" / label
        shutil.rmtree(out, ignore_errors=True)
        config = _write_yaml(work / f"{label}.yaml", train_config(case, work, out, steps=4))
        started = time.perf_counter()
        share = (limit_s - 5 - (started - check_started)) / (len(launches) - index)
        code = run_logged(lmforge_command("train", str(config), "--nproc", "1", *flags), log, share)
        # torch elastic may start its workers in sessions of their own: a timed-out launch leaves none behind.
        subprocess.run(["pkill", "-9", "-f", str(config)], check=False)
        row: dict[str, Any] = {"exit": code, "seconds": round(time.perf_counter() - started, 1)}
        final = out / "final"
        if code == 0 and final.is_dir():
            try:
                row.update(_compare_weights(model_dir(work, case.model), final))
                actual = json.loads((out / "plan.json").read_text()).get("actual", {})
                row["peak_allocated_bytes"] = actual.get("peak_memory_bytes")
                row["steps"] = json.loads((out / "result.json").read_text()).get("steps")
            except Exception as error:
                row["reload_error"] = f"{type(error).__name__}: {error}"[:300]
        row["ok"] = bool(
            code == 0 and row.get("same_names_and_shapes") and row.get("finite") and row.get("tensors_changed")
        )
        results[label] = row
        print(label, json.dumps(row), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return results


def _transformers_server(model: Path, log: Path, start_timeout_s: float) -> tuple[subprocess.Popen[Any], str]:
    import httpx

    from lmforge.serve.bench import free_port

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(model),
        "--continuous-batching",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    file = log.open("a")
    file.write(f"\n$ {' '.join(command)}\n")
    file.flush()
    # Offline, transformers' hub kernels would crash the peer as they crashed lmforge before it turned them off.
    env = {**os.environ, "USE_HUB_KERNELS": os.environ.get("USE_HUB_KERNELS", "0")}
    process = subprocess.Popen(command, stdout=file, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + start_timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    os.killpg(process.pid, 9)
    raise RuntimeError(f"transformers serve did not come up within {start_timeout_s:.0f} s (exit {process.poll()})")


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "range": [min(values), max(values)]} if values else {}


def check_serve(work: Path, dry: bool, log: Path, limit_s: float) -> dict[str, Any]:
    """`lmforge bench serve`'s library twin (with its one-at-a-time baseline and the planner's decode bound on
    this GPU's measured bandwidth) against one lmforge server, then the same client load against
    `transformers serve --continuous-batching`; three sweeps each, median and range per level."""
    import asyncio

    from lmforge.serve.bench import bench_serve, local_server, run_level

    model = model_dir(work, SERVE_MODEL)
    levels = (1, 2) if dry else (1, 16, 64)
    max_tokens = 8 if dry else 64
    repeats = 1 if dry else 2
    result: dict[str, Any] = {"model": SERVE_MODEL, "max_tokens": max_tokens, "repeats": repeats}

    def per_level(sweeps: list[dict[int, Any]]) -> dict[str, Any]:
        figures = {}
        for level in levels:
            runs = [sweep[level] for sweep in sweeps]
            figures[str(level)] = {
                "tokens_per_second": _summary([r.throughput_tokens_per_second for r in runs]),
                "ttft_p50_s": _summary([r.ttft_p50_seconds for r in runs if r.ttft_p50_seconds is not None]),
                "tpot_p50_s": _summary([r.tpot_p50_seconds for r in runs if r.tpot_p50_seconds is not None]),
                "errors": sum(r.errors for r in runs),
                "error_messages": sorted({m for r in runs for m in r.error_messages})[:3],
            }
        return figures

    with local_server(str(model), max_batch_size=max(levels)) as url:
        benches = [
            bench_serve(
                str(model),
                url=url,
                concurrency=levels,
                requests=None,
                max_tokens=max_tokens,
                baseline_requests=1,
                time_limit_s=60,
            )
            for _ in range(repeats)
        ]
    result["lmforge"] = per_level([{lv.concurrency: lv for lv in bench.levels} for bench in benches])
    result["one_at_a_time_generate"] = _summary(
        [b.baseline.throughput_tokens_per_second for b in benches if b.baseline is not None]
    )
    bound = benches[-1].bound
    result["decode_bound"] = asdict(bound) if bound is not None else None
    print("lmforge", json.dumps(result["lmforge"]), flush=True)
    try:
        process, url = _transformers_server(model, log, start_timeout_s=120)
    except RuntimeError as error:
        result["transformers_serve"] = {"failed": str(error)}
        return result
    try:
        # transformers serve refuses vLLM's ignore_eos; a random model ends a reply at eos about once in
        # 150,000 tokens, and throughput counts the tokens each usage record reports.
        sweeps = [
            {
                level: asyncio.run(
                    run_level(
                        url,
                        str(model),
                        level,
                        max(8, 2 * level),
                        max_tokens=max_tokens,
                        time_limit_s=60,
                        ignore_eos=False,
                    )
                )
                for level in levels
            }
            for _ in range(repeats)
        ]
        result["transformers_serve"] = per_level(sweeps)
    except Exception as error:
        result["transformers_serve"] = {"failed": f"{type(error).__name__}: {error}"[:300]}
    finally:
        os.killpg(process.pid, 9)
    print("transformers serve", json.dumps(result["transformers_serve"]), flush=True)
    return result


def _plain_loop(model: Path, blocks: list[list[int]], micro_batch: int, steps: int) -> dict[str, Any]:
    """A hand-written loop: bf16 autocast, forward, backward, clip, the same AdamW the Trainer builds."""
    import torch
    import transformers

    device = "cuda" if cuda() else "cpu"
    net = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(device)
    net.train()
    # The Trainer's default optimizer since transformers 5 on torch >= 2.8 (adamw_torch_fused).
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5, weight_decay=0.0, fused=True)
    timings = []
    for step in range(steps):
        batch = torch.tensor(blocks[(step * micro_batch) % (len(blocks) - micro_batch) :][:micro_batch], device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = net(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    del net, optimizer
    return {"seconds_per_step": statistics.median(timings[2:]), "optimizer": "torch AdamW, fused"}


def check_speed(work: Path, dry: bool, log: Path, limit_s: float) -> dict[str, Any]:
    """Tokens/s and MFU of a full fine-tune: lmforge's run_training vs the plain loop, alternating, 2 rounds."""
    import gc
    import itertools

    import torch
    from transformers import AutoTokenizer

    from lmforge.data.tokenize import tokenize_text
    from lmforge.plan.hardware import get_accelerator
    from lmforge.train.callbacks import read_metrics
    from lmforge.train.config import validate_config
    from lmforge.train.run import run_training

    case = scaled(Case(SERVE_MODEL, "full", 2048, 8, False), dry)
    steps = 6 if dry else 12
    model = model_dir(work, case.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    from datasets import Dataset

    texts = Dataset.from_list(read_jsonl(work / "corpus.jsonl"))
    blocks = [
        b for b in tokenize_text(texts, tokenizer, block_size=case.seq_len)["input_ids"] if len(b) == case.seq_len
    ]
    params = json.loads((work / "models.json").read_text())[case.model]["params"]
    tokens_per_step = case.micro_batch * case.seq_len
    plain_runs, ours_runs = [], []
    for round_index in range(1 if dry else 2):
        plain = _plain_loop(model, blocks, case.micro_batch, steps)
        plain_runs.append(plain["seconds_per_step"])
        gc.collect()
        out = work / "runs" / f"speed-{round_index}"
        shutil.rmtree(out, ignore_errors=True)
        config = validate_config(train_config(case, work, out, steps=steps))
        run_training(config, progress=False)
        times = [r["time"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
        ours_runs.append(statistics.median(b - a for a, b in itertools.pairwise(times[2:])))
        shutil.rmtree(out, ignore_errors=True)
        gc.collect()
        if cuda():
            torch.cuda.empty_cache()
    peak = get_accelerator(TARGET_GPU).bf16_tflops * 1e12
    result: dict[str, Any] = {
        "model": case.model,
        "params": params,
        "micro_batch": case.micro_batch,
        "seq_len": case.seq_len,
        "steps": steps,
        "plain_optimizer": plain["optimizer"],
        "mfu_assumption": f"6 x params x tokens/s over {TARGET_GPU}'s dense bf16 peak "
        f"({peak / 1e12:.0f} TFLOP/s); attention FLOPs not counted",
    }
    for label, runs in (("plain", plain_runs), ("lmforge", ours_runs)):
        median = statistics.median(runs)
        tokens_per_second = tokens_per_step / median
        result[label] = {
            "seconds_per_step_median": median,
            "seconds_per_step_range": [min(runs), max(runs)],
            "tokens_per_second": tokens_per_second,
            "mfu": 6 * params * tokens_per_second / peak if cuda() else None,
        }
    result["overhead_percent"] = 100 * (
        result["lmforge"]["seconds_per_step_median"] / result["plain"]["seconds_per_step_median"] - 1
    )
    return result


CHECK_FUNCTIONS = {
    "env": check_env,
    "models": check_models,
    "planner": check_planner,
    "qlora": check_qlora,
    "launch": check_launch,
    "serve": check_serve,
    "speed": check_speed,
}


def child(check: str, work: Path, dry: bool, log: Path, limit_s: float) -> None:
    """One check in this process; its result (or its error) as WORK/results/CHECK.json."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    try:
        result = CHECK_FUNCTIONS[check](work, dry, log, limit_s)
    except Exception as error:
        traceback.print_exc()
        result = {"failed": f"{type(error).__name__}: {error}"[:500]}
    result["seconds"] = round(time.perf_counter() - started, 1)
    if check == "models" and "models" in result:
        (work / "models.json").write_text(json.dumps(result["models"]))
    (work / "results").mkdir(exist_ok=True)
    (work / "results" / f"{check}.json").write_text(json.dumps(result, indent=2, default=str))


# ---------------------------------------------------------------- the parent: wheels, children, report


def install_wheels(wheels: Path, site: Path, log: Path) -> dict[str, Any]:
    """Install each carried wheel whose package this Python lacks or has in an older version, without
    dependencies (the carried set is the closure lmforge needs), into `site`, which goes first on PYTHONPATH."""
    import importlib.metadata

    from packaging.version import Version

    chosen, kept = [], {}
    for wheel in sorted(wheels.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        try:
            installed = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is not None and Version(installed) >= Version(version):
            kept[name] = installed
            continue
        chosen.append(wheel)
    if chosen:
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--upgrade",
            "--target",
            str(site),
            *map(str, chosen),
        ]
        code = run_logged(command, log, 300)
        if code:
            raise RuntimeError(f"pip could not install the carried wheels (exit {code}); see the log")
    return {"installed": [w.name for w in chosen], "kept": kept}


def run_check(check: str, work: Path, dry: bool, log: Path, limit_s: float, env: dict[str, str]) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        check,
        "--work",
        str(work),
        "--log",
        str(log),
        "--limit-s",
        str(limit_s),
    ] + (["--dry-run"] if dry else [])
    attempts = 3 if check == "planner" else 1  # a configuration that kills the process must not end the table
    code = 0
    started = time.perf_counter()
    for _ in range(attempts):
        left = limit_s - (time.perf_counter() - started)
        if left < 10:
            break
        code = run_logged(command, log, left, env)
        if code == 0 or code == 124:
            break
    result_file = work / "results" / f"{check}.json"
    if check == "planner" and (code != 0 or not result_file.is_file()):
        rows = _final_rows(work / "planner.jsonl")
        if code == 124:  # the configuration left at its start marker was stopped by the time limit, not a crash
            rows = [
                {**row, "failed": "stopped at the check's time limit"} if row.get("started") else row for row in rows
            ]
        return {"rows": rows, "exit": code, **({"timed_out": True} if code == 124 else {})}
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        return {**result, **({"exit": code} if code else {})}
    return {"failed": "timed out" if code == 124 else f"exit {code}, no result (see gpu_check.log)"}


def _gib(value: Any) -> str:
    return "-" if not value else f"{value / 2**30:.2f}"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:+.1f} %"


def markdown(report: dict[str, Any]) -> str:
    """The tables docs/gpu.md quotes."""
    env = report["checks"].get("env", {})
    lines = [
        f"# lmforge GPU check ({'dry run, CPU' if report['dry_run'] else env.get('gpu', '?')})",
        "",
        f"- date: {env.get('date')}; command: `{report['command']}`",
        f"- versions: {json.dumps(env.get('versions', {}))}",
        f"- driver/memory: {env.get('nvidia_smi', '-')}; CUDA {env.get('cuda_version', '-')}",
        "",
    ]
    planner = report["checks"].get("planner", {})
    lines += [
        "## Planner vs measured peak (GiB per GPU)",
        "",
        "planned tensors = the planner's per-GPU figure without its CUDA-context and allocator-slack term; "
        "error = planned tensors / max_memory_allocated - 1; total error = planned total / NVML - 1.",
        "",
        "| configuration | planned total | planned tensors | max allocated | max reserved | NVML (process) "
        "| error | total error | trainable (plan = actual) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in planner.get("rows", []):
        if "failed" in row or "skipped" in row:
            lines.append(f"| {row['case']} | {row.get('failed') or row.get('skipped')} |||||||")
            continue
        same = row.get("planned_trainable") == row.get("actual_trainable")
        lines.append(
            f"| {row['case']} | {_gib(row['planned_total_bytes'])} | {_gib(row['planned_tensor_bytes'])} | "
            f"{_gib(row['max_allocated_bytes'])} | {_gib(row['max_reserved_bytes'])} | "
            f"{_gib(row['nvml_process_bytes'])} | {_percent(row.get('error_vs_allocated'))} | "
            f"{_percent(row.get('error_total_vs_nvml'))} | {'yes' if same else 'NO'} |"
        )
    for name in ("qlora", "launch", "serve", "speed"):
        lines += ["", f"## {name}", "", "```json", json.dumps(report["checks"].get(name, {}), indent=1)[:6000], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="folder for gpu_check.json, gpu_check.md, gpu_check.log")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on a CPU: the orchestration only")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated checks ({', '.join(CHECKS)})")
    parser.add_argument("--deadline-s", type=float, default=540.0, help="stop starting checks after this")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels (make gpu-wheels) to install first")
    parser.add_argument("--work", type=Path, help="scratch folder (default: /dev/shm when it has room, else /tmp)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit-s", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work, args.dry_run, args.log, args.limit_s)
        return
    if args.out is None:
        parser.error("give the OUT folder")
    started = time.perf_counter()
    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "gpu_check.log"
    log.write_text("")
    shm = Path("/dev/shm")
    base = args.work or (shm if shm.is_dir() and shutil.disk_usage(shm).free > 60 * 2**30 else None)
    work = Path(tempfile.mkdtemp(prefix="lmforge-gpu-check-", dir=base))
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    report: dict[str, Any] = {"dry_run": args.dry_run, "command": " ".join(sys.argv), "work": str(work), "checks": {}}
    if args.wheels:
        site = work / "site"
        report["wheels"] = install_wheels(args.wheels, site, log)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(site), os.environ.get("PYTHONPATH", "")])
    needs_models = {"planner", "qlora", "launch", "serve", "speed"}
    if needs_models & set(wanted) and "models" not in wanted:
        wanted.insert(0, "models")
    try:
        for check in [c for c in CHECKS if c in wanted]:
            left = args.deadline_s - (time.perf_counter() - started)
            if left < 20:
                report["checks"][check] = {"skipped": f"out of time ({args.deadline_s:.0f} s deadline)"}
                continue
            limit = min(CHECK_LIMIT_S[check] * (DRY_RUN_LIMIT_FACTOR if args.dry_run else 1), left)
            print(f"[{time.perf_counter() - started:6.1f} s] {check} (limit {limit:.0f} s)", flush=True)
            report["checks"][check] = run_check(check, work, args.dry_run, log, limit, env)
            print(json.dumps(report["checks"][check], default=str)[:1500], flush=True)
            _write_report(args.out, report, started)
            if check == "models" and "failed" in report["checks"][check]:
                break
    finally:
        _write_report(args.out, report, started)
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out / 'gpu_check.json'} and gpu_check.md in {time.perf_counter() - started:.0f} s")


def _write_report(out: Path, report: dict[str, Any], started: float) -> None:
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
