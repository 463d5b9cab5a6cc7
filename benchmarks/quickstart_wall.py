"""Wall time and held-out figures of the full `lmforge quickstart`, over seeds (target: <= 10 min on 2 CPU cores).

    .venv/bin/python benchmarks/quickstart_wall.py                  # full recipe, seeds 0 1 2, temporary folders
    .venv/bin/python benchmarks/quickstart_wall.py --seeds 0        # one seed
    .venv/bin/python benchmarks/quickstart_wall.py --fast           # the test recipe (target: under 2 minutes)

The recipe is `pipeline.FULL` as shipped, whose settings benchmarks/quickstart_search.py chose on the
VALIDATION split; this script scores the TEST split, once per seed, and prints every seed's row and then
the mean and range over the seeds (the figures README.md and docs/quickstart.md quote). Wall and CPU
seconds are printed with the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# (stage, figure, label): the figures summarised over seeds.
FIGURES = [
    ("pretrain", "exact_match", "pretrain EM"),
    ("sft", "exact_match", "SFT EM"),
    ("dpo", "exact_match", "DPO EM"),
    ("rlhf", "exact_match", "RLHF EM"),
    ("sft", "mistake_preference_accuracy", "SFT pref. on its mistakes"),
    ("dpo", "mistake_preference_accuracy", "DPO pref. on SFT's mistakes"),
    ("sft", "preference_accuracy", "SFT pref. (built-in)"),
    ("dpo", "preference_accuracy", "DPO pref. (built-in)"),
    ("rm", "reward_accuracy", "RM acc."),
]


def _one(seed: int, fast: bool, out: Path | None) -> dict[str, Any]:
    """One full quickstart with `seed`; its wall/CPU seconds, load averages and stage records."""
    from lmforge.quickstart import pipeline, run_quickstart

    recipe = dataclasses.replace(pipeline.FAST if fast else pipeline.FULL, seed=seed)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        folder = (out / f"seed{seed}") if out else Path(scratch) / "quickstart"
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_quickstart(folder, progress=False, recipe=recipe)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "seed": seed,
        "recipe": recipe,
        "wall": wall,
        "cpu": cpu,
        "load": (load_before, os.getloadavg()[0]),
        "result": result,
    }


def _print_run(run: dict[str, Any], fast: bool) -> None:
    result, target = run["result"], 120 if fast else 600
    print(
        f"seed {run['seed']}: wall {run['wall']:.1f} s, CPU {run['cpu']:.1f} s (target wall <= {target} s: "
        f"{'met' if run['wall'] <= target else 'NOT met'}); load average {run['load'][0]:.1f} before, "
        f"{run['load'][1]:.1f} after, {os.cpu_count()} cores"
    )
    print(
        f"  {'stage':<10} {'seconds':>8} {'steps':>6} {'exact match':>12} {'pref. acc.':>11} {'on mistakes':>12} "
        f"{'RM acc.':>8}"
    )
    for name, record in result.stages.items():
        cells = [
            f"{v:.1%}" if v is not None else "-"
            for v in (
                record.exact_match,
                record.preference_accuracy,
                record.mistake_preference_accuracy,
                record.reward_accuracy,
            )
        ]
        steps = "-" if record.steps is None else str(record.steps)
        print(
            f"  {name:<10} {record.seconds:>8.1f} {steps:>6} {cells[0]:>12} {cells[1]:>11} {cells[2]:>12} {cells[3]:>8}"
        )
    mined = result.stages["pairs"].details
    print(
        "  pairs from SFT's mistakes: "
        + ", ".join(
            f"{split} {c['pairs']} of {c['answers']} (+{c['topped_up']} built-in)" for split, c in mined.items()
        )
    )
    implicit = result.stages["dpo"].details.get("dpo_reward_accuracy")
    if implicit is not None:
        print(f"  DPO implicit-reward accuracy (validation pairs): {implicit:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the --fast recipe instead of the full one")
    parser.add_argument("--out", type=Path, help="keep the runs in OUT/seedN (default: temporary folders)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="the recipe's seeds (weights, data order, problems drawn)",
    )
    args = parser.parse_args()

    from lmforge.cli.quickstart import _quiet_libraries

    _quiet_libraries()
    runs = []
    for seed in args.seeds:
        runs.append(_one(seed, args.fast, args.out))
        _print_run(runs[-1], args.fast)
    recipe = runs[0]["recipe"]
    print(
        f"\nrecipe: sft_lr {recipe.sft_lr:g}, rm_lr {recipe.rm_lr:g}, dpo_lr {recipe.dpo_lr:g}, dpo_steps "
        f"{recipe.dpo_steps}{'' if args.fast else ' (chosen on validation by benchmarks/quickstart_search.py)'}; "
        f"scored on the {recipe.score_split} split"
    )
    print(f"over seeds {' '.join(map(str, args.seeds))}: mean (range)")
    for stage, figure, label in FIGURES:
        values = [getattr(run["result"].stages[stage], figure) for run in runs]
        if all(value is not None for value in values):
            print(f"  {label:<28} {statistics.mean(values):6.1%}  ({min(values):.1%} - {max(values):.1%})")
    walls = [run["wall"] for run in runs]
    print(f"  {'wall seconds':<28} {statistics.median(walls):6.1f}  ({min(walls):.1f} - {max(walls):.1f}), median")


if __name__ == "__main__":
    main()
