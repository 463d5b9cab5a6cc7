"""Cold start of the analytic planner: wall time of fresh `lmforge plan ... --json` processes.

Each run is a new Python process (nothing cached in memory), exactly what a user's shell does.
Printed beside two baselines measured in the same run: a bare `python -c pass` and `lmforge --help`.

    .venv/bin/python benchmarks/plan_cold_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_SECONDS = 0.5
PLAN = ["plan", "llama-3.1-70b", "--method", "lora", "--gpu", "a100-80g", "--json"]
FULL = ["plan", "llama-3.1-70b", "--gpu", "a100-80g", "--json"]  # same model, full training: no LoRA counting


def _lmforge() -> list[str]:
    script = Path(sys.executable).with_name("lmforge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lmforge"]


def _time(command: list[str], runs: int) -> list[float]:
    subprocess.run(command, check=True, capture_output=True)  # warm the OS file cache once, untimed
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("lmforge --help", [*_lmforge(), "--help"]),
        ("lmforge " + " ".join(FULL), [*_lmforge(), *FULL]),
        ("lmforge " + " ".join(PLAN), [*_lmforge(), *PLAN]),  # the target: last, so `median` is its figure
    ]
    print(f"{'command':<72} {'median s':>9} {'min s':>7} {'max s':>7}")
    median = 0.0
    for label, command in cases:
        seconds = _time(command, args.runs)
        median = statistics.median(seconds)
        print(f"{label:<72} {median:>9.3f} {min(seconds):>7.3f} {max(seconds):>7.3f}")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {load} (other work on the machine slows every row alike)")
    verdict = "PASS" if median <= TARGET_SECONDS else "FAIL"
    print(f"planner cold start: median {median:.3f} s over {args.runs} fresh processes "
          f"(target <= {TARGET_SECONDS} s): {verdict}")


if __name__ == "__main__":
    main()
