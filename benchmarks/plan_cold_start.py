"""Cold start of the analytic planner: wall time of fresh `lmforge plan ... --json` processes.

Each run is a new Python process (nothing cached in memory), exactly what a user's shell does.
Printed beside two baselines measured in the same run: a bare `python -c pass` and `lmforge --help`.
On a shared machine wall time includes waiting for a CPU, so the CPU seconds each process used
(user + system, from the kernel's accounting of children) are printed too: on an idle machine a
single-threaded start-up takes about that long.

    .venv/bin/python benchmarks/plan_cold_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(command: list[str], runs: int) -> tuple[list[float], list[float]]:
    subprocess.run(command, check=True, capture_output=True)  # warm the OS file cache once, untimed
    wall, cpu = [], []
    for _ in range(runs):
        cpu_before, started = _children_cpu_seconds(), time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall.append(time.perf_counter() - started)
        cpu.append(_children_cpu_seconds() - cpu_before)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("lmforge --help", [*_lmforge(), "--help"]),
        ("lmforge " + " ".join(FULL), [*_lmforge(), *FULL]),
        ("lmforge " + " ".join(PLAN), [*_lmforge(), *PLAN]),  # the target: last
    ]
    print(f"{'command':<68} {'wall median s':>13} {'wall min s':>10} {'CPU median s':>12}")
    for label, command in cases:
        wall, cpu = _time(command, args.runs)
        print(f"{label:<68} {statistics.median(wall):>13.3f} {min(wall):>10.3f} {statistics.median(cpu):>12.3f}")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {load} (other work on the machine slows wall time)")
    wall_median, cpu_median = statistics.median(wall), statistics.median(cpu)
    verdict = "PASS" if cpu_median <= TARGET_SECONDS else "FAIL"
    print(
        f"planner cold start: CPU median {cpu_median:.3f} s (wall median {wall_median:.3f} s on this machine) over "
        f"{args.runs} fresh processes; target <= {TARGET_SECONDS} s: {verdict}"
    )


if __name__ == "__main__":
    main()
