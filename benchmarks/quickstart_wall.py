"""Wall time and stage metrics of the full `lmforge quickstart` (target: at most 10 minutes on 2 CPU cores).

    .venv/bin/python benchmarks/quickstart_wall.py            # full recipe, into a temporary folder
    .venv/bin/python benchmarks/quickstart_wall.py --fast     # the test recipe (target: under 2 minutes)
    .venv/bin/python benchmarks/quickstart_wall.py --seed 1   # the full recipe with another seed

Prints wall and CPU seconds (the machine may be shared: CPU seconds are what the run itself used),
the load average before and after, each stage's seconds and its held-out figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the --fast recipe instead of the full one")
    parser.add_argument("--out", type=Path, help="keep the run in this folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0, help="the recipe's seed (weights, data order, problems drawn)")
    args = parser.parse_args()

    import dataclasses

    from lmforge.cli.quickstart import _quiet_libraries
    from lmforge.quickstart import pipeline, run_quickstart

    name = "FAST" if args.fast else "FULL"
    setattr(pipeline, name, dataclasses.replace(getattr(pipeline, name), seed=args.seed))

    _quiet_libraries()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "quickstart"
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_quickstart(out, fast=args.fast, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    target = 120 if args.fast else 600
    print(f"quickstart ({result.recipe}): wall {wall:.1f} s, CPU {cpu:.1f} s (target wall <= {target} s: "
          f"{'met' if wall <= target else 'NOT met'}); load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores")
    print(f"{'stage':<10} {'seconds':>8} {'steps':>6} {'exact match':>12} {'pref. acc.':>11} {'on mistakes':>12} "
          f"{'RM acc.':>8}")
    for name, record in result.stages.items():
        cells = [f"{v:.1%}" if v is not None else "-"
                 for v in (record.exact_match, record.preference_accuracy, record.mistake_preference_accuracy,
                           record.reward_accuracy)]
        steps = "-" if record.steps is None else str(record.steps)
        print(f"{name:<10} {record.seconds:>8.1f} {steps:>6} {cells[0]:>12} {cells[1]:>11} {cells[2]:>12} "
              f"{cells[3]:>8}")
    mined = result.stages["pairs"].details
    print("pairs from SFT's mistakes: " + ", ".join(f"{split} {c['pairs']} of {c['answers']} (+{c['topped_up']} "
                                                     f"built-in)" for split, c in mined.items()))
    on_mistakes = result.stages["rm"].details.get("reward_accuracy_on_mistakes")
    if on_mistakes is not None:
        print(f"reward model on SFT's held-out mistakes: pairwise accuracy {on_mistakes:.1%}")
    implicit = result.stages["dpo"].details.get("dpo_reward_accuracy")
    if implicit is not None:
        print(f"seed {args.seed}; DPO implicit-reward accuracy (validation pairs): {implicit:.1%}")


if __name__ == "__main__":
    main()
