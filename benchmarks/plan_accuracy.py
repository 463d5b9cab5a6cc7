"""Accuracy of the analytic memory model against a measured training step.

For every configuration (real catalog models at full depth × methods × precisions × recomputation),
prints the analytic peak (plan.memory.training_memory, without its "overhead" category: the CUDA
context and allocator slack that a fake-tensor run cannot see) beside the peak of live tensor bytes
measured by plan.simulate.simulate_training (one real transformers forward + backward + AdamW step
on fake tensors, 2- and 3-layer runs extrapolated to the model's depth), and the relative error.

    .venv/bin/python benchmarks/plan_accuracy.py [--seq-len 1024] [--quick | --techniques]
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

from lmforge.plan.memory import training_memory
from lmforge.plan.models import resolve_model
from lmforge.plan.params import count_params
from lmforge.plan.setup import Layout, TrainingSetup
from lmforge.plan.simulate import simulate_training

MODELS = ("smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b", "llama-2-7b")
METHODS = ("full", "lora")
PRECISIONS = ("fp32", "bf16-mixed", "bf16")
RECOMPUTE = ("none", "full")
TOLERANCE = 0.10
GIB = 2**30


def _configurations(seq_len: int, quick: bool, techniques_only: bool = False) -> list[tuple[str, TrainingSetup]]:
    models = MODELS[:2] if quick else MODELS
    grid = [
        (model, TrainingSetup(method=method, precision=precision, recompute=recompute, seq_len=seq_len))
        for model, method, precision, recompute in itertools.product(models, METHODS, PRECISIONS, RECOMPUTE)
    ]
    extra = [
        ("llama-2-7b", TrainingSetup(method="lora", attention="eager", seq_len=seq_len)),
        ("qwen2.5-0.5b", TrainingSetup(method="full", attention="eager", seq_len=seq_len)),
        ("llama-3.2-1b", TrainingSetup(method="full", micro_batch_size=4, seq_len=seq_len // 2)),
        ("llama-3.2-1b", TrainingSetup(method="lora", optimizer="sgd", micro_batch_size=2, seq_len=seq_len)),
        ("mistral-7b", TrainingSetup(method="lora", target_modules=("q_proj", "v_proj"), seq_len=seq_len)),
        ("llama-3.1-70b", TrainingSetup(method="lora", recompute="full", seq_len=4096)),
        ("qwen3-0.6b", TrainingSetup(method="full", seq_len=seq_len)),
        ("qwen3-0.6b", TrainingSetup(method="lora", seq_len=seq_len)),
        ("mixtral-8x7b", TrainingSetup(method="lora", seq_len=seq_len)),
        ("qwen3-30b-a3b", TrainingSetup(method="lora", recompute="full", seq_len=seq_len)),
        ("qwen3-30b-a3b", TrainingSetup(method="full", precision="bf16", seq_len=seq_len)),
        ("deepseek-v2-lite", TrainingSetup(method="lora", seq_len=seq_len)),
        ("gpt2", TrainingSetup(method="full", seq_len=seq_len)),
        ("gpt2", TrainingSetup(method="lora", precision="fp32", seq_len=seq_len)),
        ("gemma-3-270m", TrainingSetup(method="full", seq_len=seq_len)),
        ("tinyllama-1.1b", TrainingSetup(method="lora", recompute="full", micro_batch_size=8, seq_len=seq_len)),
    ]
    # The memory techniques recipes use (torchtune, Liger, trl), each on a 128k- or 152k-vocabulary model.
    techniques = [
        ("llama-3.2-1b", TrainingSetup(method="full", loss="chunked", seq_len=seq_len)),
        ("llama-3.2-1b", TrainingSetup(method="lora", loss="chunked", recompute="full", seq_len=4 * seq_len)),
        (
            "qwen2.5-0.5b",
            TrainingSetup(method="full", precision="bf16", loss="chunked", micro_batch_size=4, seq_len=seq_len),
        ),
        ("llama-3.1-8b", TrainingSetup(method="lora", loss="chunked", recompute="full", seq_len=4 * seq_len)),
        ("llama-3.2-1b", TrainingSetup(method="full", offload_activations=True, seq_len=seq_len)),
        ("llama-2-7b", TrainingSetup(method="lora", offload_activations=True, recompute="full", seq_len=seq_len)),
        ("qwen2.5-0.5b", TrainingSetup(method="full", precision="bf16", optimizer_in_backward=True, seq_len=seq_len)),
        (
            "llama-3.2-1b",
            TrainingSetup(
                method="full", precision="fp32", optimizer_in_backward=True, recompute="full", seq_len=seq_len
            ),
        ),
        ("llama-3.2-1b", TrainingSetup(method="full", attention="flash", seq_len=seq_len)),
        (
            "llama-3.2-1b",
            TrainingSetup(
                method="full",
                precision="bf16",
                loss="chunked",
                optimizer_in_backward=True,
                offload_activations=True,
                recompute="full",
                seq_len=4 * seq_len,
            ),
        ),
    ]
    if techniques_only:
        return techniques
    return grid + ([] if quick else extra + techniques)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="two small models only")
    parser.add_argument("--techniques", action="store_true", help="only the memory-technique rows")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # GPT-2's config notes its loss_type on every build

    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    print(
        "| model | params | method | precision | recompute | attn | mbs x seq | analytic GiB | simulated GiB | error | peak (sim) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, setup in _configurations(args.seq_len, args.quick, args.techniques):
        spec = resolve_model(name)
        analytic = training_memory(spec, setup, Layout())
        predicted = analytic.total_bytes - analytic["overhead"]
        measured = simulate_training(spec, setup)
        error = (predicted - measured.peak_bytes) / measured.peak_bytes
        rows.append(error)
        method = setup.method if setup.target_modules is None else f"lora({','.join(setup.target_modules)})"
        if setup.optimizer != "adamw":
            method += f" +{setup.optimizer}"
        for name_, on in (
            ("chunked loss", setup.loss == "chunked"),
            ("offload", setup.offload_activations),
            ("opt-in-bwd", setup.optimizer_in_backward),
        ):
            method += f" +{name_}" if on else ""
        print(
            f"| {name} | {count_params(spec).total_params / 1e9:.2f}B | {method} | {setup.precision} | {setup.recompute} "
            f"| {setup.attention} | {setup.micro_batch_size} x {setup.seq_len} | {predicted / GIB:.2f} "
            f"| {measured.peak_bytes / GIB:.2f} | {error:+.1%} | {measured.peak_phase} |",
            flush=True,
        )
    worst = max(rows, key=abs)
    verdict = "within" if abs(worst) <= TOLERANCE else "OUTSIDE"
    print(
        f"\n{len(rows)} configurations; worst error {worst:+.1%} ({verdict} ±{TOLERANCE:.0%}); "
        f"mean |error| {sum(abs(e) for e in rows) / len(rows):.1%}; {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
