"""Peak memory of loading + validating a ~1 GB JSONL file: lmforge's streaming loader beside what a user
would otherwise use, `datasets.load_dataset("json", ...)`, and the naive way (a Python list of every parsed
record, as `[json.loads(line) for line in f]` does).

`datasets.load_dataset` stops at the first broken line, so it runs twice: on the same file (its error is
reported) and on a copy with the broken lines left out (its memory and speed are measured there).

A synthetic alpaca JSONL (unique records of ~0.5 KB, one broken line per 100,000) is written to a
temporary folder that is deleted afterwards. Each method runs in its own child process, which
reports its own peak RSS (resource.getrusage ru_maxrss) and records/s. The naive baseline reads
only the first --naive-mb of the file, because on the whole file it would need several times the
file size in RAM; its peak grows linearly with the bytes read, so its per-GB figure is printed.
The script exits 1 if loading grows lmforge's RSS (peak minus after-imports) by a quarter of the
file size or more.

    .venv/bin/python benchmarks/data_bounded_memory.py [--size-mb 1024] [--naive-mb 128] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def write_jsonl(path: Path, size_bytes: int, broken: bool = True) -> int:
    """Unique alpaca records until the file reaches size_bytes; returns the number of lines."""
    words = [
        "the",
        "a",
        "model",
        "learns",
        "to",
        "add",
        "sort",
        "count",
        "reverse",
        "convert",
        "numbers",
        "letters",
        "words",
        "quickly",
        "carefully",
    ]
    bodies = [" ".join(words[(i * 7 + j) % len(words)] for j in range(60)) for i in range(997)]
    lines = 0
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        chunk = []
        while written < size_bytes:
            if broken and lines % 100_000 == 99_999:
                line = '{"instruction": "broken record\n'
            else:
                record = {"instruction": f"Task {lines}: {bodies[lines % 997][:120]}", "input": "",
                          "output": bodies[(lines * 31) % 997] * 2}  # fmt: skip
                line = json.dumps(record) + "\n"
            chunk.append(line)
            written += len(line)
            lines += 1
            if len(chunk) == 10_000:
                handle.write("".join(chunk))
                chunk = []
        handle.write("".join(chunk))
    return lines


def run_lmforge(path: Path, work: Path) -> dict:
    import datasets  # noqa: F401  (imported before the baseline RSS is taken, as in the naive run)

    from lmforge.data.load import load_data

    before = peak_rss_bytes()
    start = time.perf_counter()
    result = load_data(path, on_error="skip", rejects_path=work / "rejects.jsonl", cache_dir=work / "arrow")
    seconds = time.perf_counter() - start
    report = result.report
    return {"records_in": report.records_in, "records_out": report.records_out, "rejected": report.rejected,
            "seconds": seconds, "peak_rss_bytes": peak_rss_bytes(), "rss_after_imports_bytes": before}  # fmt: skip


def run_datasets(path: Path, work: Path) -> dict:
    """datasets.load_dataset("json") as a user calls it: Arrow cache on disk, every record parsed."""
    import datasets

    before = peak_rss_bytes()
    start = time.perf_counter()
    try:
        loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(work / "hf"))
    except Exception as error:  # the baseline's own failure is a figure here
        return {
            "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}",
            "seconds": time.perf_counter() - start,
            "peak_rss_bytes": peak_rss_bytes(),
            "rss_after_imports_bytes": before,
        }
    return {
        "records_in": len(loaded),
        "seconds": time.perf_counter() - start,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_after_imports_bytes": before,
    }


def run_naive(path: Path, limit_bytes: int) -> dict:
    import datasets  # noqa: F401  (same imports as lmforge's run, so the baselines compare)

    before = peak_rss_bytes()
    start = time.perf_counter()
    records, read = [], 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            read += len(line)
            if read > limit_bytes:
                break
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    seconds = time.perf_counter() - start
    return {"records_in": len(records), "bytes_read": read, "seconds": seconds, "peak_rss_bytes": peak_rss_bytes(),
            "rss_after_imports_bytes": before}  # fmt: skip


def child(mode: str, path: Path, work: Path, naive_bytes: int) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--file", str(path), "--work", str(work),
               "--naive-mb", str(naive_bytes // MIB)]  # fmt: skip
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--naive-mb", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["lmforge", "naive", "datasets"])
    parser.add_argument("--file", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.child == "lmforge":
        print(json.dumps(run_lmforge(args.file, args.work)))
        return 0
    if args.child == "datasets":
        print(json.dumps(run_datasets(args.file, args.work)))
        return 0
    if args.child == "naive":
        print(json.dumps(run_naive(args.file, args.naive_mb * MIB)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="lmforge-bench-"))
    try:
        path = work / "big.jsonl"
        start = time.perf_counter()
        lines = write_jsonl(path, args.size_mb * MIB)
        size = path.stat().st_size
        generate_seconds = time.perf_counter() - start
        lm = child("lmforge", path, work, args.naive_mb * MIB)
        hf_same = child("datasets", path, work, 0)
        clean = work / "clean.jsonl"
        write_jsonl(clean, args.size_mb * MIB, broken=False)
        hf = child("datasets", clean, work, 0)
        naive = child("naive", path, work, args.naive_mb * MIB)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    naive_per_gib = (naive["peak_rss_bytes"] - naive["rss_after_imports_bytes"]) / naive["bytes_read"] * (1 << 30)
    figures = {
        "file_bytes": size,
        "lines": lines,
        "generate_seconds": round(generate_seconds, 1),
        "lmforge": lm | {"records_per_second": round(lm["records_in"] / lm["seconds"])},
        "datasets_same_file": hf_same,
        "datasets_clean_copy": hf
        | ({"records_per_second": round(hf["records_in"] / hf["seconds"])} if "records_in" in hf else {}),
        "naive": naive
        | {
            "records_per_second": round(naive["records_in"] / naive["seconds"]),
            "extra_rss_per_gib_read_bytes": round(naive_per_gib),
        },
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"file: {size / MIB:.0f} MiB, {lines} lines (generated in {generate_seconds:.0f} s)")
        print("lmforge load_data (stream → Arrow, validate every line, skip + rejects file):")
        print(f"  {lm['records_in']} in = {lm['records_out']} out + {lm['rejected']} rejected, "
              f"{lm['seconds']:.1f} s, {lm['records_in'] / lm['seconds']:,.0f} records/s")  # fmt: skip
        print(f"  peak RSS {lm['peak_rss_bytes'] / MIB:,.0f} MiB (after imports {lm['rss_after_imports_bytes'] / MIB:,.0f} MiB)"
              f" = {lm['peak_rss_bytes'] / size:.1%} of the file")  # fmt: skip
        print(f"datasets.load_dataset('json') on the same file: {hf_same.get('error', 'loaded')}")
        if "records_in" in hf:
            print(
                f"datasets.load_dataset('json') on a copy without the broken lines: {hf['records_in']} records, "
                f"{hf['seconds']:.1f} s, {hf['records_in'] / hf['seconds']:,.0f} records/s, peak RSS "
                f"{hf['peak_rss_bytes'] / MIB:,.0f} MiB (after imports {hf['rss_after_imports_bytes'] / MIB:,.0f} MiB)"
            )
        print(f"naive list of dicts, first {naive['bytes_read'] / MIB:.0f} MiB only:")
        print(f"  {naive['records_in']} records, {naive['records_in'] / naive['seconds']:,.0f} records/s, "
              f"peak RSS {naive['peak_rss_bytes'] / MIB:,.0f} MiB → +{naive_per_gib / MIB:,.0f} MiB per GiB of JSONL")  # fmt: skip
    return 0 if lm["peak_rss_bytes"] - lm["rss_after_imports_bytes"] < size / 4 else 1


if __name__ == "__main__":
    sys.exit(main())
